package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/grpctest"
	"github.com/shardkv/shardkv/internal/rpc"
)

// batchReplica answers Gets, alone or batched: the value is the key, and
// the key "refused" fails as NOT_READY. Batches take 20 ms each, and one
// with the key "held" until hold is closed.
type batchReplica struct {
	kvpb.UnimplementedKVServer
	noBatch bool // a server from before KV.Batch
	hold    chan struct{}
	batches atomic.Int64
	alone   atomic.Int64

	mu       sync.Mutex
	maxBatch int // the largest batch request received, encoded
}

func (r *batchReplica) get(req *kvpb.GetRequest) (*kvpb.GetReply, error) {
	if string(req.GetKey()) == "refused" {
		return nil, kvpb.Errors.ToStatus(fmt.Errorf("%w: not today", kvpb.ErrNotReady))
	}
	return &kvpb.GetReply{Value: req.GetKey(), Found: true}, nil
}

func (r *batchReplica) Get(_ context.Context, req *kvpb.GetRequest) (*kvpb.GetReply, error) {
	r.alone.Add(1)
	return r.get(req)
}

func (r *batchReplica) Batch(_ context.Context, req *kvpb.BatchRequest) (*kvpb.BatchReply, error) {
	if r.noBatch {
		return nil, status.Error(codes.Unimplemented, "unknown method Batch")
	}
	r.batches.Add(1)
	r.mu.Lock()
	r.maxBatch = max(r.maxBatch, proto.Size(req))
	r.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	reply := &kvpb.BatchReply{}
	for _, op := range req.GetOps() {
		if string(op.GetGet().GetKey()) == "held" || op.GetGet().GetGroup() == 1 {
			<-r.hold
		}
		if string(op.GetGet().GetKey()) == "big" {
			reply.Results = append(reply.Results, kvpb.ErrorResult(kvpb.Errors.ToStatus(kvpb.ErrBatchFull)))
			continue
		}
		if w := op.GetWrite(); w != nil {
			reply.Results = append(reply.Results, &kvpb.BatchResult{Result: &kvpb.BatchResult_Write{Write: &kvpb.WriteReply{Succeeded: true}}})
			continue
		}
		g, err := r.get(op.GetGet())
		if err != nil {
			reply.Results = append(reply.Results, kvpb.ErrorResult(err))
			continue
		}
		reply.Results = append(reply.Results, &kvpb.BatchResult{Result: &kvpb.BatchResult_Get{Get: g}})
	}
	return reply, nil
}

func batchKVTo(t *testing.T, r *batchReplica) kvpb.KVClient {
	t.Helper()
	addr := grpctest.Serve(t, func(s *grpc.Server) { kvpb.RegisterKVServer(s, r) })
	conn, err := grpc.NewClient(addr, rpc.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return (&Client{}).batchKV(conn)
}

// TestConcurrentOpsShareBatches: ops sent while the replica is busy leave
// together; each caller gets its own reply or its own error, as from a
// call of its own; a caller whose deadline passes stops waiting alone.
func TestConcurrentOpsShareBatches(t *testing.T) {
	r := &batchReplica{hold: make(chan struct{})}
	kv := batchKVTo(t, r)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			key := fmt.Sprint("k", i)
			if i%10 == 0 {
				key = "refused"
			}
			reply, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte(key)})
			switch {
			case key == "refused":
				if !errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrNotReady) {
					t.Errorf("op %d: %v, want its own NOT_READY", i, err)
				}
			case err != nil || string(reply.GetValue()) != key:
				t.Errorf("op %d: %q %v, want %q", i, reply.GetValue(), err, key)
			}
		})
	}
	wg.Wait()
	if b := r.batches.Load(); b > n/4 {
		t.Errorf("%d ops took %d batches: they did not share", n, b)
	}
	// A caller that stops waiting does so at its deadline, while its
	// batch is still held by the replica.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte("held")}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("an op past its deadline: %v, want DeadlineExceeded", err)
	}
	close(r.hold)
}

// TestBatchFallsBackToCallsOfTheirOwn: a server that does not know
// KV.Batch is sent every op alone, and answers each.
func TestBatchFallsBackToCallsOfTheirOwn(t *testing.T) {
	r := &batchReplica{noBatch: true}
	kv := batchKVTo(t, r)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reply, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte(fmt.Sprint("k", i))})
		cancel()
		if err != nil || string(reply.GetValue()) != fmt.Sprint("k", i) {
			t.Fatalf("get %d: %q %v", i, reply.GetValue(), err)
		}
	}
	if a := r.alone.Load(); a != 3 {
		t.Errorf("%d gets served alone, want 3", a)
	}
}

// TestBatchedOpsFailAlone: a caller whose context ended before its batch
// left gets its context's error, never an empty answer; a Get whose value
// had no room in its batch's reply is read again alone; a group that
// cannot answer holds up no other group's ops on the same node; batches
// of large writes stay below the request budget.
func TestBatchedOpsFailAlone(t *testing.T) {
	r := &batchReplica{hold: make(chan struct{})}
	kv := batchKVTo(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 500 {
				done, stop := context.WithCancel(ctx)
				stop()
				if reply, err := kv.Get(done, &kvpb.GetRequest{Key: []byte("k")}); err == nil {
					t.Errorf("a get whose context had ended: %v and no error", reply)
					return
				}
			}
		})
	}
	wg.Wait()

	if reply, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte("big")}); err != nil || string(reply.GetValue()) != "big" {
		t.Errorf("a get answered BATCH_FULL: %q %v, want it read alone", reply.GetValue(), err)
	}

	held := make(chan error, 1)
	go func() {
		_, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte("g1"), Group: 1})
		held <- err
	}()
	time.Sleep(50 * time.Millisecond) // the group 1 batch is held
	if reply, err := kv.Get(ctx, &kvpb.GetRequest{Key: []byte("g2"), Group: 2}); err != nil || string(reply.GetValue()) != "g2" {
		t.Errorf("group 2's get while group 1's batch is held: %q %v", reply.GetValue(), err)
	}
	select {
	case err := <-held:
		t.Fatalf("group 1's get returned while its batch was held: %v", err)
	default:
	}
	close(r.hold)
	if err := <-held; err != nil {
		t.Errorf("group 1's get once released: %v", err)
	}

	value := make([]byte, kvpb.DefaultMaxValueSize)
	for i := range 12 {
		wg.Go(func() {
			req := &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte(fmt.Sprint("w", i)), Value: value, ClientId: 1, Seq: uint64(i + 1)}
			if _, err := kv.Write(ctx, req); err != nil {
				t.Errorf("a 1 MiB put among 12: %v", err)
			}
		})
	}
	wg.Wait()
	if r.maxBatch > kvpb.MaxBatchRequestBytes+kvpb.DefaultMaxValueSize {
		t.Errorf("a batch of %d bytes (budget %d)", r.maxBatch, kvpb.MaxBatchRequestBytes)
	}
}

// TestDroppedOpGetsItsContextsError: an op whose caller's context ended
// before its batch left is left out of the batch with its context's
// error, so a caller that sees it done (racing its own context) never
// takes an empty result for an answer.
func TestDroppedOpGetsItsContextsError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := &batchCall{ctx: ctx, op: &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: []byte("k")}}}, done: make(chan struct{})}
	(&batcher{}).call([]*batchCall{c}) // nothing live: no call is made
	<-c.done
	if status.Code(c.err) != codes.Canceled || c.res != nil {
		t.Fatalf("a dropped op: result %v, error %v; want Canceled", c.res, c.err)
	}
}
