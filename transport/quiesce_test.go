package transport_test

import (
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/shardkv/shardkv/transport"
)

// TestQuiescedNamesReachPeers: a process names its quiesced replicas to
// the peers it sent their groups' messages to, every QuiescedInterval,
// stops when they wake, and never names a replica whose transport
// closed, even when told to after the close.
func TestQuiescedNamesReachPeers(t *testing.T) {
	a, b := processPair(t, 7, 7)
	ta, _ := a.join(t, 1)
	tb, rb := b.join(t, 2)
	q1, q2 := ta.(transport.Quiescence), tb.(transport.Quiescence)
	// The control, member 3 of group 1 on a, stays quiesced: a names it to
	// b on the stream that carries member 1's names, so its names
	// arriving show that a naming round was sent and heard.
	tc, err := a.net.Join(1, 3, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	control := func() time.Time { return q2.QuiescedAt(3) }
	named := func() bool { return !q2.QuiescedAt(1).IsZero() }
	// hello is a barrier on a's stream to b; the first opens the stream.
	hello := func() {
		barrier(t, ta, rb, []*raftpb.Message{{Type: raftpb.MessageType_MsgApp.Enum(), To: new(uint64(2)), From: new(uint64(1))}})
	}
	hello()
	if named() {
		t.Fatal("member 1 named quiesced before it was")
	}
	// A member of a group that sent b nothing is not named to b.
	t9, err := a.net.Join(9, 1, &recorder{})
	if err != nil {
		t.Fatal(err)
	}
	t9.(transport.Quiescence).SetQuiesced(true)
	tc.(transport.Quiescence).SetQuiesced(true)
	q1.SetQuiesced(true)
	waitFor(t, named)
	// Any list naming member 1 was made after member 9 quiesced; two more
	// rounds only add to that.
	namedTwiceMore(t, "member 9 not named", control)
	if at := b.raft.QuiescedAt(9, 1, 0); !at.IsZero() {
		t.Fatal("a group b shares nothing with was named to it")
	}
	// Once awake, member 1 is named no more: no name arrives after those
	// sent before the wake (checked by order, not by the names' age,
	// which a loaded machine stretches). The barrier orders every name
	// sent before the wake; the control's rounds after it are lists made
	// after the wake, which must leave member 1 out.
	q1.SetQuiesced(false)
	hello()
	woke := q2.QuiescedAt(1)
	namedTwiceMore(t, "member 1 woke", control)
	if !q2.QuiescedAt(1).Equal(woke) {
		t.Fatal("member 1 still named quiesced after it woke")
	}
	if err := ta.Close(); err != nil {
		t.Fatal(err)
	}
	q1.SetQuiesced(true) // late: the member stopped
	// ta is closed: the control's transport sends the barrier, on the
	// same stream, so that the rounds counted are of lists made after the
	// late call.
	barrier(t, tc, rb, []*raftpb.Message{{Type: raftpb.MessageType_MsgApp.Enum(), To: new(uint64(2)), From: new(uint64(3))}})
	namedTwiceMore(t, "member 1 closed", control)
	if !q2.QuiescedAt(1).Equal(woke) {
		t.Fatal("a closed member is named quiesced: its process vouches for a stopped replica")
	}
}

// TestHeldHeartbeatsGoFirst: a plain heartbeat held for company goes
// before a message queued after it, never after (a quiescing heartbeat
// followed by an older plain one would wake the follower at once).
func TestHeldHeartbeatsGoFirst(t *testing.T) {
	ta, _, rb := memberPair(t, 7, 7)
	for range 20 {
		ta.Send([]*raftpb.Message{
			{Type: raftpb.MessageType_MsgHeartbeat.Enum(), To: new(uint64(2)), From: new(uint64(1))},
			{Type: raftpb.MessageType_MsgHeartbeat.Enum(), To: new(uint64(2)), From: new(uint64(1)), Context: []byte("12345678")},
		})
		time.Sleep(time.Millisecond)
	}
	waitFor(t, func() bool { n, _ := rb.count(); return n == 40 })
	rb.mu.Lock()
	defer rb.mu.Unlock()
	for i, m := range rb.got {
		if plain := len(m.GetContext()) == 0; plain != (i%2 == 0) {
			t.Fatalf("message %d arrived out of order (plain heartbeat: %v)", i, plain)
		}
	}
}
