package cluster_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/internal/memnet"
)

// TestForwardedWriteLostLeavesNoWaiter writes through a follower whose
// messages to the leader are all lost, so the forwarded batch never reaches
// the log and, the leader staying leader, the follower's raft node never
// fails it. Once the writer gives up, nothing may keep waiting for that
// batch: a waiter per lost batch would pile up (each holding its writes)
// for as long as the leadership lasts.
func TestForwardedWriteLostLeavesNoWaiter(t *testing.T) {
	h := startOneGroup(t)
	var leader, follower uint64
	for wait := time.Now().Add(10 * time.Second); leader == 0 || follower == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(wait) {
			t.Fatalf("no leader and follower of group 1 (leader %d, follower %d)", leader, follower)
		}
		leader, follower = 0, 0
		for id := uint64(1); id <= 3; id++ {
			st := h.c.Group(cluster.Replica{Group: 1, ID: id}).Node().Status()
			if st.IsLeader {
				leader = id
			} else if follower == 0 && st.Leader != 0 {
				follower = id
			}
		}
	}
	h.net.SetLinkFaults(1, follower, leader, memnet.Faults{Drop: 1})
	ctx, cancel := context.WithTimeout(h.ctx, 300*time.Millisecond)
	_, err := h.c.Group(cluster.Replica{Group: 1, ID: follower}).Write(ctx,
		&kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte("lost"), Value: []byte("v")})
	cancel()
	if err == nil {
		t.Fatal("a write forwarded over a link that loses everything succeeded")
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("the write ended before its deadline: %v", err)
	}
	if !h.c.Group(cluster.Replica{Group: 1, ID: leader}).Node().Status().IsLeader {
		t.Skip("the leadership changed: the node failed the batch itself, the case is not tested")
	}
	deadline := time.Now().Add(5 * time.Second)
	for waiters := batchWaiters(); waiters > 0; waiters = batchWaiters() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still wait for a batch whose writers gave up", waiters)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// batchWaiters counts the goroutines waiting for a proposed write batch's
// outcome.
func batchWaiters() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "groupserver.(*Server).proposeBatch.func")
		}
		buf = make([]byte, 2*len(buf))
	}
}
