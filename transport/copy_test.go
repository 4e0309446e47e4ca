package transport_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/shardkv/shardkv/transport"
)

// copyMember is a recorder that belongs to the copy of its group whose
// founding token is token.
type copyMember struct {
	recorder
	token uint64
}

func (c *copyMember) FoundingToken() uint64 { return c.token }

// TestAnotherCopysMessagesAreDropped: two copies of group 1 share member
// ids (a group created again under a left group's id, hosted at an
// address the old copy still lists). Member 2 of the new copy receives
// what its own copy and a sender without a token send, and nothing the
// old copy sends: no message, no snapshot, no quiesced name.
func TestAnotherCopysMessagesAreDropped(t *testing.T) {
	const oldCopy, newCopy = 0x0dd, 0x2e3
	a, b := processPair(t, 7, 7)
	rb := &copyMember{token: newCopy}
	if _, err := b.net.Join(1, 2, rb); err != nil {
		t.Fatal(err)
	}
	old, err := a.net.Join(1, 1, &copyMember{token: oldCopy})
	if err != nil {
		t.Fatal(err)
	}
	heartbeat := func(term uint64) []*raftpb.Message {
		return []*raftpb.Message{{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(term)}}
	}
	old.Send(heartbeat(9))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap := &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(9)),
		Snapshot: &raftpb.Snapshot{Data: []byte("old copy"), Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(9)), Term: new(uint64(9))}}}
	// The refusal crosses gRPC as its text.
	if err := old.SendSnapshot(ctx, snap); err == nil || !strings.Contains(err.Error(), transport.ErrOtherCopy.Error()) {
		t.Fatalf("snapshot from another copy: %v, want ErrOtherCopy", err)
	}
	old.(transport.Quiescence).SetQuiesced(true)
	waitFor(t, func() bool { return b.raft.OtherCopy() >= 2 })
	// Waited for, not slept on: on a loaded machine the first name may
	// take longer than a few intervals, and without it the test proves
	// nothing.
	waitFor(t, func() bool { return !b.raft.QuiescedAt(1, 1, 0).IsZero() })
	if n, _ := rb.count(); n != 0 {
		t.Fatalf("the new copy's member took %d messages of the old copy", n)
	}
	if at := b.raft.QuiescedAt(1, 1, newCopy); !at.IsZero() {
		t.Fatal("the old copy's member 1 counts as the new copy's quiesced member 1")
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	// The new copy's own member 1, and one that knows no token (data
	// written before tokens were kept), reach it.
	for _, token := range []uint64{newCopy, 0} {
		tr, err := a.net.Join(1, 1, &copyMember{token: token})
		if err != nil {
			t.Fatal(err)
		}
		tr.Send(heartbeat(3))
		if err := tr.SendSnapshot(ctx, snap); err != nil {
			t.Fatalf("snapshot from token %x: %v", token, err)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { n, _ := rb.count(); return n == 4 })
	if got := b.raft.OtherCopy(); got != 2 {
		t.Fatalf("%d messages dropped as another copy's, want the old copy's 2", got)
	}
}

// TestBothCopiesNamedQuiesced: members 1 of two copies of group 1, on two
// processes, both name themselves quiesced to a third, which hosts the
// new copy's member 2: its member 1 counts as present whatever the old
// copy's names say, and stops counting when only the old copy names one.
func TestBothCopiesNamedQuiesced(t *testing.T) {
	const oldCopy, newCopy = 0x0dd, 0x2e3
	a, b := processPair(t, 7, 7) // a: the old copy's member 1; b: the new copy's member 2
	resolve, set := memberResolver(func(group uint64) bool { return group == 1 })
	c := startClusterProcess(t, 7, resolve) // the new copy's member 1
	set(c.addr, b.addr)
	rb := &copyMember{token: newCopy}
	if _, err := b.net.Join(1, 2, rb); err != nil {
		t.Fatal(err)
	}
	hello := []*raftpb.Message{{Type: raftpb.MessageType_MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2))}}
	var members []transport.Transport
	for _, at := range []struct {
		p     *process
		token uint64
	}{{a, oldCopy}, {c, newCopy}} {
		tr, err := at.p.net.Join(1, 1, &copyMember{token: at.token})
		if err != nil {
			t.Fatal(err)
		}
		tr.Send(hello) // opens the stream the names travel in
		tr.(transport.Quiescence).SetQuiesced(true)
		members = append(members, tr)
	}
	// The control on c: the new copy's member 3, quiesced throughout, is
	// named on c's stream to b (which carries group 1's names since the
	// hello).
	control, err := c.net.Join(1, 3, &copyMember{token: newCopy})
	if err != nil {
		t.Fatal(err)
	}
	control.(transport.Quiescence).SetQuiesced(true)
	// While both copies name member 1, the new copy's member 1 is named
	// at every look and each of its names counts. Checked by the names'
	// order, not by their age, which a loaded machine stretches.
	named := func() time.Time { return b.raft.QuiescedAt(1, 1, newCopy) }
	waitFor(t, func() bool { return !named().IsZero() })
	for range 5 {
		last := named()
		waitFor(t, func() bool {
			now := named()
			if now.Before(last) {
				t.Fatal("the new copy's member 1 went missing while both copies named it")
			}
			return now.After(last)
		})
	}
	// Once only the old copy names member 1, its names change nothing.
	// The barrier after the wake orders every name c sent before it.
	// Then two rounds of each stream are waited for: a's, by the old
	// copy's member 1, which stays quiesced (its names are those under
	// test), and c's, by a control member of the new copy on c that
	// stays quiesced (a name of member 1 c made after the wake would
	// come with it).
	members[1].(transport.Quiescence).SetQuiesced(false)
	barrier(t, members[1], &rb.recorder, hello)
	woke := named()
	namedTwiceMore(t, "the new copy's member 1 woke",
		func() time.Time { return b.raft.QuiescedAt(1, 1, oldCopy) },
		func() time.Time { return b.raft.QuiescedAt(1, 3, newCopy) })
	if !named().Equal(woke) {
		t.Fatal("the old copy's names count as the new copy's member 1")
	}
}
