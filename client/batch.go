package client

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/kvpb"
)

// Batching. Every Get and Write an attempt sends to a replica goes through
// that replica's batcher: while maxBatchesInFlight batches are on their
// way to it, further ops wait, and leave together in the next batch (one
// KV.Batch call, up to maxBatchOps ops) as soon as one returns. Nothing
// waits on a timer: a lone op leaves at once, and ops batch only when the
// replica is busy, which is when sharing a call saves most (TiKV's client
// batches its commands to a store the same way). The replica serves each
// op as if it had come alone; each caller gets its own reply or error, as
// from its own call, and stops waiting at its own deadline.
const (
	maxBatchesInFlight = 4
	maxBatchOps        = kvpb.MaxBatchOps
)

// batchKV is a kvpb.KVClient whose Get and Write go through a batcher;
// the other methods are the connection's own.
type batchKV struct {
	kvpb.KVClient
	b *batcher
}

func (k batchKV) Get(ctx context.Context, req *kvpb.GetRequest, opts ...grpc.CallOption) (*kvpb.GetReply, error) {
	return batched(ctx, k, &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: req}}, (*kvpb.BatchResult).GetGet,
		func() (*kvpb.GetReply, error) { return k.KVClient.Get(ctx, req, opts...) }, opts)
}

func (k batchKV) Write(ctx context.Context, req *kvpb.WriteRequest, opts ...grpc.CallOption) (*kvpb.WriteReply, error) {
	return batched(ctx, k, &kvpb.BatchOp{Op: &kvpb.BatchOp_Write{Write: req}}, (*kvpb.BatchResult).GetWrite,
		func() (*kvpb.WriteReply, error) { return k.KVClient.Write(ctx, req, opts...) }, opts)
}

// batched sends op through k's batcher and returns its reply (reply picks
// it from the result), or calls alone instead when the call has options
// (a batch carries none) or the server does not know KV.Batch.
func batched[Rep any](ctx context.Context, k batchKV, op *kvpb.BatchOp, reply func(*kvpb.BatchResult) Rep,
	alone func() (Rep, error), opts []grpc.CallOption) (Rep, error) {
	if len(opts) > 0 || k.b.unsupported() {
		return alone()
	}
	res, err := k.b.do(ctx, op)
	if err != nil {
		var none Rep
		return none, err
	}
	return reply(res), nil
}

// batcher gathers the ops bound for one connection into KV.Batch calls.
type batcher struct {
	kv   kvpb.KVClient
	conn *grpc.ClientConn

	mu       sync.Mutex
	queue    []*batchCall
	inFlight int  // batches sent and not yet answered (senders running)
	noBatch  bool // the server does not know KV.Batch: every op alone
}

// batchCall is one op waiting in a batcher.
type batchCall struct {
	ctx  context.Context
	op   *kvpb.BatchOp
	done chan struct{} // closed when res or err is set
	res  *kvpb.BatchResult
	err  error
}

func newBatcher(conn *grpc.ClientConn) *batcher {
	return &batcher{kv: kvpb.NewKVClient(conn), conn: conn}
}

// closed reports whether the batcher's connection was closed (a replica
// that left the configuration).
func (b *batcher) closed() bool { return b.conn.GetState() == connectivity.Shutdown }

func (b *batcher) unsupported() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.noBatch
}

// do queues op, starts a sender if fewer than maxBatchesInFlight run, and
// waits for op's result or for ctx to end. A result holding an error is
// returned as that error.
func (b *batcher) do(ctx context.Context, op *kvpb.BatchOp) (*kvpb.BatchResult, error) {
	c := &batchCall{ctx: ctx, op: op, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	if b.inFlight < maxBatchesInFlight {
		b.inFlight++
		go b.send()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		// As a call of its own would end: the op may still be served.
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if c.err != nil {
		return nil, c.err
	}
	if err := c.res.Err(); err != nil {
		return nil, err
	}
	return c.res, nil
}

// send sends batches until the queue is empty, then frees its slot.
func (b *batcher) send() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxBatchOps)
		if n == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		calls := b.queue[:n:n]
		b.queue = append([]*batchCall(nil), b.queue[n:]...)
		b.mu.Unlock()
		b.call(calls)
	}
}

// call sends calls as one batch (those whose callers stopped waiting are
// left out) and hands every call its result.
func (b *batcher) call(calls []*batchCall) {
	live := calls[:0]
	var deadline time.Time
	bounded := true
	for _, c := range calls {
		if c.ctx.Err() != nil {
			close(c.done) // its caller returned already
			continue
		}
		live = append(live, c)
		if d, ok := c.ctx.Deadline(); !ok {
			bounded = false
		} else if d.After(deadline) {
			deadline = d
		}
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if bounded {
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	defer cancel()
	req := &kvpb.BatchRequest{Ops: make([]*kvpb.BatchOp, len(live))}
	now := time.Now()
	for i, c := range live {
		req.Ops[i] = c.op
		if d, ok := c.ctx.Deadline(); ok {
			c.op.TimeoutMs = uint32(max(1, (d.Sub(now)+time.Millisecond-1)/time.Millisecond))
		}
	}
	reply, err := b.kv.Batch(ctx, req)
	if status.Code(err) == codes.Unimplemented {
		// A server from before KV.Batch: every op goes alone from now on.
		b.mu.Lock()
		b.noBatch = true
		b.mu.Unlock()
		for _, c := range live {
			c.op.TimeoutMs = 0
			go b.alone(c)
		}
		return
	}
	if err == nil && len(reply.GetResults()) != len(live) {
		err = status.Errorf(codes.Internal, "client: a batch of %d ops answered with %d results", len(live), len(reply.GetResults()))
	}
	for i, c := range live {
		if err != nil {
			c.err = err
		} else {
			c.res = reply.GetResults()[i]
		}
		close(c.done)
	}
}

// alone sends c's op in a call of its own.
func (b *batcher) alone(c *batchCall) {
	res := &kvpb.BatchResult{}
	switch op := c.op.GetOp().(type) {
	case *kvpb.BatchOp_Get:
		reply, err := b.kv.Get(c.ctx, op.Get)
		res.Result, c.err = &kvpb.BatchResult_Get{Get: reply}, err
	case *kvpb.BatchOp_Write:
		reply, err := b.kv.Write(c.ctx, op.Write)
		res.Result, c.err = &kvpb.BatchResult_Write{Write: reply}, err
	}
	c.res = res
	close(c.done)
}
