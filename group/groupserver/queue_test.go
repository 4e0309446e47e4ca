package groupserver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/group"
)

// queueOnly is a Server with a write queue and no batcher: nothing takes
// what is queued.
func queueOnly(t *testing.T, room int) (*Server, context.CancelFunc) {
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	return &Server{ctx: ctx, writes: make(chan *queuedWrite, room)}, stop
}

var aPut = &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte("k"), Value: []byte("v")}

// TestQueueWriteWithoutWaiting: a KV.Batch's write is queued without
// waiting for room. A full queue, an ended deadline and a stopping replica
// each refuse it at once, queue nothing, and say so (errQueueFull sends
// the write to a worker; the others are its answer, certainly not
// applied).
func TestQueueWriteWithoutWaiting(t *testing.T) {
	s, stop := queueOnly(t, 1)
	ctx := context.Background()
	if _, err := s.queueWrite(ctx, aPut, false); err != nil {
		t.Fatalf("a write with room: %v", err)
	}
	if _, err := s.queueWrite(ctx, aPut, false); !errors.Is(err, errQueueFull) {
		t.Fatalf("a write into a full queue: %v, want errQueueFull", err)
	}
	<-s.writes // room again
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.queueWrite(ended, aPut, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("a write whose deadline ended: %v, want its context's error", err)
	}
	stop()
	if _, err := s.queueWrite(ctx, aPut, false); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("a write to a stopping replica: %v, want ErrNotReady", err)
	}
	if n := len(s.writes); n != 0 {
		t.Fatalf("%d writes queued by refused calls", n)
	}
}

// TestAwaitWriteOutcomes: an outcome already delivered wins over a
// deadline passed since, and is reported as known when it was sent; a write the batcher never took is answered
// ErrNotReady once the replica stops (certainly not applied), and a
// proposed one waits on for its outcome.
func TestAwaitWriteOutcomes(t *testing.T) {
	s, stop := queueOnly(t, 4)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	w, err := s.queueWrite(context.Background(), aPut, true)
	if err != nil {
		t.Fatal(err)
	}
	known := time.Now().Add(-time.Second)
	w.out <- writeOutcome{v: &group.WriteResult{Succeeded: true, Version: 7}, at: known}
	res, at, err := s.awaitWrite(ended, w)
	if err != nil || res.Version != 7 {
		t.Fatalf("an outcome there before the deadline was looked at: %v %v, want version 7", res, err)
	}
	if !at.Equal(known) { // a batched write's latency ends there, not when it is taken
		t.Fatalf("outcome known at %v, awaitWrite says %v", known, at)
	}

	never, err := s.queueWrite(context.Background(), aPut, true)
	if err != nil {
		t.Fatal(err)
	}
	taken, err := s.queueWrite(context.Background(), aPut, true)
	if err != nil {
		t.Fatal(err)
	}
	taken.state.Store(proposed) // as the batcher marks the writes it proposes
	stop()
	if _, _, err := s.awaitWrite(context.Background(), never); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("a write never taken, the replica stopping: %v, want ErrNotReady", err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		taken.out <- writeOutcome{v: &group.WriteResult{Succeeded: true, Version: 9}}
	}()
	if res, _, err := s.awaitWrite(context.Background(), taken); err != nil || res.Version != 9 {
		t.Fatalf("a proposed write, the replica stopping: %v %v, want its outcome (version 9)", res, err)
	}
}

// TestBatchOpDeadlinesRunFromArrival: an op's timeout_ms counts from the
// batch's arrival, not from when the handler reaches the op.
func TestBatchOpDeadlinesRunFromArrival(t *testing.T) {
	arrived := time.Now().Add(-time.Second)
	ctx, cancel := opContext(context.Background(), &kvpb.BatchOp{TimeoutMs: 1500}, arrived)
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || !d.Equal(arrived.Add(1500*time.Millisecond)) {
		t.Fatalf("deadline %v (%v), want %v", d, ok, arrived.Add(1500*time.Millisecond))
	}
	ctx, cancel = opContext(context.Background(), &kvpb.BatchOp{}, arrived)
	defer cancel()
	if _, ok := ctx.Deadline(); ok {
		t.Fatal("an op without timeout_ms has a deadline of its own")
	}
}
