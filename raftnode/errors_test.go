package raftnode_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/memnet"
	"github.com/shardkv/shardkv/storage"
)

// TestErrorClasses is the table of every error a proposal can end with and
// whether it proves the proposal was not applied. A retry after an error
// classed "certainly not applied" must never apply a command twice; every
// other error leaves the outcome unknown.
func TestErrorClasses(t *testing.T) {
	for certainlyNot, errs := range map[bool][]error{
		true: {
			&rpcerr.NotLeaderError{Leader: 2},
			&rpcerr.NotLeaderError{},
			rpcerr.ErrProposalDropped,
			rpcerr.ErrStopped,
			fmt.Errorf("wrapped: %w", rpcerr.ErrProposalDropped),
			rpcerr.ErrNoSpace,
			rpcerr.ErrStalled,
		},
		false: {
			rpcerr.ErrStoppedInFlight,
			rpcerr.ErrLeaderChanged,
			context.DeadlineExceeded,
			context.Canceled,
			rpcerr.ErrReadTimeout,
			errors.New("transport: connection reset"),
		},
	} {
		for _, err := range errs {
			if got := rpcerr.CertainlyNotApplied(err); got != certainlyNot {
				t.Errorf("CertainlyNotApplied(%v) = %v, want %v", err, got, certainlyNot)
			}
		}
	}
	if errors.Is(rpcerr.ErrStoppedInFlight, rpcerr.ErrStopped) {
		t.Error("ErrStoppedInFlight must not match ErrStopped: callers treat ErrStopped as certain")
	}
}

// TestStoppedLeaderReportsUnknown stops a leader whose proposal reached the
// followers but was not yet committed: the proposer must be told the
// outcome is unknown, and indeed the new leader then applies the entry.
// (Reporting rpcerr.ErrStopped here made a retried append apply twice in
// TestLinearizable.)
func TestStoppedLeaderReportsUnknown(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.leader()
	// A committed warm-up entry puts the followers in the leader's
	// replicate state, so the next entry is sent to them at once.
	if _, err := c.propose(context.Background(), encodeCmd('p', "warm", "up")); err != nil {
		t.Fatal(err)
	}
	lead := c.leader()
	// Followers receive the leader's appends, but their acks are lost, so
	// the entry cannot commit while this leader lives.
	for _, id := range c.peers {
		if id != lead {
			c.net.SetLinkFaults(testGroup, id, lead, memnet.Faults{Drop: 1})
		}
	}
	p, err := c.node(lead).Submit(context.Background(), encodeCmd('a', "k", "x"))
	if err != nil {
		t.Fatal(err)
	}
	// Wait until both followers have the entry in their logs (they cannot
	// apply it).
	index := c.node(lead).Status().Commit + 1
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range c.peers {
		if id == lead {
			continue
		}
		for {
			c.mu.Lock()
			e := c.engines[id]
			c.mu.Unlock()
			st, err := e.RaftLog(storage.Replica{Group: testGroup, ID: id}).Load()
			if err != nil {
				t.Fatal(err)
			}
			if n := len(st.Entries); n > 0 && st.Entries[n-1].GetIndex() >= index {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("follower %d never received the entry", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := p.Wait(context.Background())
		done <- err
	}()
	c.crash(lead)
	err = <-done
	if !errors.Is(err, rpcerr.ErrStoppedInFlight) || rpcerr.CertainlyNotApplied(err) {
		t.Fatalf("Wait after stop = %v, want ErrStoppedInFlight (outcome unknown)", err)
	}
	c.net.SetFaults(memnet.Faults{})
	c.net.Heal()
	for _, id := range c.peers {
		if id != lead {
			c.net.SetLinkFaults(testGroup, id, lead, memnet.Faults{})
		}
	}
	c.leader()
	// The survivors elect a leader, which commits the entry of the stopped
	// one: an answer of "certainly not applied" would have been a lie.
	want := map[string]string{"k": "x"}
	c.mu.Lock()
	delete(c.sms, lead)
	c.mu.Unlock()
	c.waitConverged(want)
}

// TestForwardedProposalNeverBlocksStep: a member that knows no leader
// receives a proposal forwarded by a peer. Step must return at once: the
// transport delivers each peer's messages in order on one stream, so a
// blocked Step held back every later message of that peer (a new leader's
// heartbeats included) and the member never rejoined (found by the
// nemesis's silent-partitions scenario).
func TestForwardedProposalNeverBlocksStep(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.leader()
	var follower uint64
	for _, id := range c.peers {
		if id != lead {
			follower = id
		}
	}
	c.isolateUntilLeaderless(follower)
	prop := &raftpb.Message{Type: raftpb.MessageType_MsgProp.Enum(), From: new(lead), To: new(follower),
		Entries: []*raftpb.Entry{{Data: []byte("forwarded")}}}
	done := make(chan error, 1)
	go func() { done <- c.node(follower).Step(context.Background(), prop) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Step of a forwarded proposal blocked on a member without a leader")
	}
}
