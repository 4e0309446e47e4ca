package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
)

// Batching. Every Get and Write an attempt sends to a replica goes through
// the batcher of that replica's connection and the request's group: while
// maxBatchesInFlight batches are on their way, further ops wait, and leave
// together in the next batch (one KV.Batch call, up to kvpb.MaxBatchOps
// ops and kvpb.MaxBatchRequestBytes of requests) as soon as one returns.
// Nothing waits on a timer: a lone op leaves at once, and ops batch only
// when the replica is busy, which is when sharing a call saves most
// (TiKV's client batches its commands to a store the same way). A node
// hosting several groups gets one batcher per group, so that a group that
// cannot answer holds up no other group's ops. The replica serves each op
// as if it had come alone; each caller gets its own reply or error, as
// from its own call, and stops waiting at its own deadline. A batcher
// sends a copy of each request: a caller that stopped waiting may reuse
// its key and value at once, as after a call of its own.
const maxBatchesInFlight = 4

// batchAgain is how long a batcher sends every op alone after its server
// answered that it does not know KV.Batch (a server from before it), before
// trying a batch again (the server may have been upgraded).
const batchAgain = time.Minute

// batchKV is a kvpb.KVClient whose Get and Write go through the batcher
// of their group; the other methods are the connection's own.
type batchKV struct {
	kvpb.KVClient
	batcher func(gid uint64) *batcher
}

func (k batchKV) Get(ctx context.Context, req *kvpb.GetRequest, opts ...grpc.CallOption) (*kvpb.GetReply, error) {
	op := func() *kvpb.BatchOp {
		return &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: proto.CloneOf(req)}}
	}
	return batched(ctx, k.batcher(req.GetGroup()), op, (*kvpb.BatchResult).GetGet,
		func() (*kvpb.GetReply, error) { return k.KVClient.Get(ctx, req, opts...) }, opts)
}

func (k batchKV) Write(ctx context.Context, req *kvpb.WriteRequest, opts ...grpc.CallOption) (*kvpb.WriteReply, error) {
	op := func() *kvpb.BatchOp {
		return &kvpb.BatchOp{Op: &kvpb.BatchOp_Write{Write: proto.CloneOf(req)}}
	}
	return batched(ctx, k.batcher(req.GetGroup()), op, (*kvpb.BatchResult).GetWrite,
		func() (*kvpb.WriteReply, error) { return k.KVClient.Write(ctx, req, opts...) }, opts)
}

// batched sends the op op makes through b and returns its reply (reply
// picks it from the result), or calls alone instead: when the call has
// options (a batch carries none), when the server does not know KV.Batch,
// and for a Get whose value had no room in its batch's reply (nothing
// changed: it is read again).
func batched[Rep proto.Message](ctx context.Context, b *batcher, op func() *kvpb.BatchOp, reply func(*kvpb.BatchResult) Rep,
	alone func() (Rep, error), opts []grpc.CallOption) (Rep, error) {
	var none Rep
	if len(opts) > 0 || b.unsupported() {
		return alone()
	}
	res, err := b.do(ctx, op())
	switch {
	case errors.Is(err, errNoBatch), errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrBatchFull):
		return alone()
	case err != nil:
		return none, err
	}
	r := reply(res)
	if !r.ProtoReflect().IsValid() {
		// Not the kind of answer the op asked for: the op may have been
		// served, so this is no "certainly not applied".
		return none, status.Error(codes.Internal, "client: a batched op was answered with another kind of result")
	}
	return r, nil
}

// errNoBatch is the result of an op whose server does not know KV.Batch:
// it was not sent, and goes alone.
var errNoBatch = errors.New("client: the server does not know KV.Batch")

// batcher gathers the ops of one group bound for one connection into
// KV.Batch calls.
type batcher struct {
	kv   kvpb.KVClient
	conn *grpc.ClientConn

	mu           sync.Mutex
	queue        []*batchCall
	inFlight     int       // batches sent and not yet answered (senders running)
	noBatchUntil time.Time // the server does not know KV.Batch: every op alone until then
}

// batchCall is one op waiting in a batcher. Its sender sets res or err,
// then closes done.
type batchCall struct {
	ctx  context.Context
	op   *kvpb.BatchOp
	size int // the op's encoded size
	done chan struct{}
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
	return time.Now().Before(b.noBatchUntil)
}

// do queues op, starts a sender if fewer than maxBatchesInFlight run, and
// waits for op's result or for ctx to end. A result holding an error is
// returned as that error.
func (b *batcher) do(ctx context.Context, op *kvpb.BatchOp) (*kvpb.BatchResult, error) {
	c := &batchCall{ctx: ctx, op: op, size: proto.Size(op), done: make(chan struct{})}
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
	switch {
	case c.err != nil:
		return nil, c.err
	case c.res == nil:
		return nil, status.Error(codes.Internal, "client: a batched op ended without a result")
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
		n, bytes := 0, 0
		for n < len(b.queue) && n < kvpb.MaxBatchOps && (n == 0 || bytes+b.queue[n].size <= kvpb.MaxBatchRequestBytes) {
			bytes += b.queue[n].size
			n++
		}
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
		if err := c.ctx.Err(); err != nil {
			c.err = status.FromContextError(err).Err() // its caller has returned, or is about to
			close(c.done)
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
			c.op.TimeoutMs = uint32(min(max(1, (d.Sub(now)+time.Millisecond-1)/time.Millisecond), 1<<31))
		}
	}
	reply, err := b.kv.Batch(ctx, req)
	switch {
	case status.Code(err) == codes.Unimplemented:
		// A server from before KV.Batch (gRPC refuses an unknown method
		// before any handler): nothing was sent; every op goes alone.
		b.mu.Lock()
		b.noBatchUntil = time.Now().Add(batchAgain)
		b.mu.Unlock()
		err = errNoBatch
	case status.Code(err) == codes.ResourceExhausted && len(live) > 1:
		// A batch of several ops too large for a message (batches are cut
		// and replies bounded so that none is): not one op's size, which
		// a client takes for a deterministic refusal. Its ops may have
		// been served. (A batch of one op, a request over gRPC's limit,
		// fails as that op's own call would: never decoded.)
		err = status.Errorf(codes.Unavailable, "client: a batch of %d ops: %v", len(live), err)
	case err == nil && len(reply.GetResults()) != len(live):
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
