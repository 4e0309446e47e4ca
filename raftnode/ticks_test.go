package raftnode_test

import (
	"context"
	"testing"
	"time"

	"github.com/shardkv/shardkv/internal/memnet"
	"github.com/shardkv/shardkv/raftnode"
)

// TestInjectedTicksDriveRealNode runs etcd raft's own raft.Node (not the
// transcripts' synchronous one) on a clock the test drives through
// Config.Ticks: only member 1 is ticked, so only member 1 can time out and
// it must become the leader; a proposal on a follower then commits
// without any member being ticked again.
func TestInjectedTicksDriveRealNode(t *testing.T) {
	dir := t.TempDir()
	net := memnet.New(1)
	peers := []uint64{1, 2, 3}
	nodes := map[uint64]*raftnode.Node{}
	ticks := map[uint64]chan time.Time{}
	for _, id := range peers {
		e, sm := openMember(t, dir, id)
		ticks[id] = make(chan time.Time)
		n, err := raftnode.Start(raftnode.Config{Group: testGroup, ID: id, Peers: peers,
			Engine: e, Network: net, StateMachine: sm, Logger: (&cluster{}).logger(),
			Ticks: ticks[id], HeartbeatTicks: hbTicks, ElectionTicks: electionTicks})
		if err != nil {
			t.Fatal(err)
		}
		nodes[id] = n
		t.Cleanup(func() {
			n.Stop()
			_ = e.Close()
		})
	}
	// Each tick is received by member 1's Ready loop before the next is
	// sent; between ticks the test waits for the effect it expects, by
	// polling, never for a fixed time.
	for i := 0; !nodes[1].Status().IsLeader; i++ {
		if i == 100*electionTicks {
			t.Fatal("member 1 never became leader")
		}
		ticks[1] <- time.Time{}
		waitFor(t, 20*time.Millisecond, func() bool { return nodes[1].Status().IsLeader })
	}
	for _, id := range peers[1:] {
		if !waitFor(t, 10*time.Second, func() bool { return nodes[id].Status().Leader == 1 }) {
			t.Fatalf("member %d never learned its leader", id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := nodes[3].Propose(ctx, encodeCmd('p', "x", "1"))
	if err != nil || v != "1" {
		t.Fatalf("proposal on a follower: %v, %v", v, err)
	}
}

// waitFor polls cond until it holds or d passes; it reports whether cond
// held.
func waitFor(t *testing.T, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}
