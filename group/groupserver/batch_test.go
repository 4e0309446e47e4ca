package groupserver

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/kvpb"
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
