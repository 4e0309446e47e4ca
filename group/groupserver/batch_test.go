package groupserver

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/memnet"
)

// TestBatchedWritesExactlyOnce: concurrent clients put through the
// batcher, some giving up on a write before its outcome (a deadline that
// ends at once or soon) and retrying it with the same sequence number, as
// a client does. Every write applies exactly once (each key's version is
// its client's number of writes) and every caller gets its own outcome,
// while the batcher recycles the queued writes of callers that received
// theirs (run with -race).
func TestBatchedWritesExactlyOnce(t *testing.T) {
	s := startAlone(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const clients, writes = 16, 60
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range uint64(clients) {
		key := fmt.Appendf(nil, "client-%d", c)
		if _, err := s.Write(ctx, &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_OPEN_SESSION, Key: key, ClientId: c + 1}); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for seq := uint64(1); seq <= writes; seq++ {
				req := &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: key, Value: strconv.AppendUint(nil, seq, 10), ClientId: c + 1, Seq: seq}
				if seq%3 == 0 { // give up at once or soon; the retry below has the outcome
					wctx, wcancel := context.WithTimeout(ctx, time.Duration(seq%2)*time.Millisecond)
					_, _ = s.Write(wctx, req)
					wcancel()
				}
				reply, err := s.Write(ctx, req)
				if err != nil {
					errs <- fmt.Errorf("client %d seq %d: %v", c+1, seq, err)
					return
				}
				if !reply.GetSucceeded() {
					errs <- fmt.Errorf("client %d seq %d: %v", c+1, seq, reply)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for c := range uint64(clients) {
		key := fmt.Appendf(nil, "client-%d", c)
		reply, err := s.Get(ctx, &kvpb.GetRequest{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		if reply.GetVersion() != writes || string(reply.GetValue()) != strconv.Itoa(writes) {
			t.Errorf("client %d: key at version %d with %q, want version %d with %q", c+1, reply.GetVersion(), reply.GetValue(), writes, strconv.Itoa(writes))
		}
	}
}

// TestGivenUpBatchLeavesNoWaiter writes through a follower whose messages
// to the leader are all lost, so its forwarded batch never reaches the log
// and, the leader staying leader, nothing fails it. Once the writers gave
// up, nothing may keep waiting for that batch (each caller counts itself
// out of it: batchWaiters).
func TestGivenUpBatchLeavesNoWaiter(t *testing.T) {
	net := memnet.New(1)
	servers := startGroup(t, net, 3)
	leader, follower := servers[0], servers[1]
	for deadline := time.Now().Add(10 * time.Second); follower.node.Status().Leader != leader.cfg.ID; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the follower knows no leader")
		}
	}
	net.SetLinkFaults(1, follower.cfg.ID, leader.cfg.ID, memnet.Faults{Drop: 1})
	var wg sync.WaitGroup
	for c := range uint64(4) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := follower.Write(ctx, &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: fmt.Appendf(nil, "lost-%d", c), Value: []byte("v")})
			if err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Errorf("write %d over a link that loses everything: %v, before its deadline: %v", c, err, ctx.Err())
			}
		})
	}
	wg.Wait()
	if !leader.node.Status().IsLeader {
		t.Skip("the leadership changed: the node failed the batch itself, the case is not tested")
	}
	for start := time.Now(); batchWaited(); time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatal("a goroutine still waits for a batch whose writers all gave up")
		}
	}
}

// batchWaited reports whether a goroutine waits for a proposed batch's
// outcome.
func batchWaited() bool {
	var stacks strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
	return strings.Contains(stacks.String(), "groupserver.(*Server).proposeBatch.func")
}
