package groupserver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/transport"
)

// Router serves the group services (kvpb.KV, grouppb.Handoff,
// grouppb.Backup, memberpb.Membership and the Identify of
// transport.RegisterIdentity) of every replica a process hosts, on one gRPC
// server: each request goes to the replica of the group it names. A
// process hosting replicas of several groups is a node; one replica on its
// own gRPC server is a node hosting one group.
//
// A request for a group the process hosts no replica of is refused with
// kvpb.ErrWrongGroup (memberpb.ErrWrongGroup for membership), which
// clients treat as for a shard the group does not own: re-read the
// configuration and retry. A request naming no group (0, from clients
// older than nodes) goes to the process's only replica, and is refused so
// when it hosts several.
type Router struct {
	mu       sync.RWMutex
	replicas map[uint64]*Server // by group id
	ops      *opPool            // KV.Batch's ops
}

// NewRouter returns a router hosting no replica.
func NewRouter() *Router { return &Router{replicas: map[uint64]*Server{}, ops: newOpPool()} }

// Register adds the group services to g; replicas added later are served
// at once.
func (r *Router) Register(g *grpc.Server) {
	kvpb.RegisterKVServer(g, kvRoutes{r: r})
	grouppb.RegisterHandoffServer(g, internalRoutes{r: r})
	grouppb.RegisterBackupServer(g, internalRoutes{r: r})
	memberpb.RegisterMembershipServer(g, memberRoutes{r: r})
	transport.RegisterIdentity(g, r.identities)
}

// Add serves s's group through r. A process hosts at most one replica of a
// group: a second one would make two of the group's votes fail together.
func (r *Router) Add(s *Server) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.replicas[s.cfg.GID]; ok {
		return fmt.Errorf("groupserver: this process already hosts replica %d of group %d; a node hosts one replica per group",
			old.cfg.ID, s.cfg.GID)
	}
	r.replicas[s.cfg.GID] = s
	return nil
}

// Remove stops serving s through r (it is stopping); its group's requests
// are refused as WRONG_GROUP from then on.
func (r *Router) Remove(s *Server) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.replicas[s.cfg.GID] == s {
		delete(r.replicas, s.cfg.GID)
	}
}

// Hosted maps every group hosted to its replica's raft id.
func (r *Router) Hosted() map[uint64]uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[uint64]uint64, len(r.replicas))
	for gid, s := range r.replicas {
		out[gid] = s.cfg.ID
	}
	return out
}

// ReplicaOf returns the replica of group gid the router serves, if any.
func (r *Router) ReplicaOf(gid uint64) (*Server, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s, ok := r.replicas[gid]
	return s, ok
}

// identities is what Identify states of every replica hosted.
func (r *Router) identities() map[uint64]transport.Hosted {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[uint64]transport.Hosted, len(r.replicas))
	for gid, s := range r.replicas {
		out[gid] = transport.Hosted{Replica: s.cfg.ID, Incarnation: s.sm.Incarnation()}
	}
	return out
}

// replica returns the replica of group gid (0: the only one), or
// kvpb.ErrWrongGroup.
func (r *Router) replica(gid uint64) (*Server, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if s, ok := r.replicas[gid]; ok {
		return s, nil
	}
	if gid == 0 && len(r.replicas) == 1 {
		for _, s := range r.replicas {
			return s, nil
		}
	}
	hosted := slices.Sorted(maps.Keys(r.replicas))
	if gid == 0 {
		return nil, fmt.Errorf("%w: the request names no group, and this process hosts replicas of groups %v", kvpb.ErrWrongGroup, hosted)
	}
	return nil, fmt.Errorf("%w: this process hosts no replica of group %d (it hosts groups %v)", kvpb.ErrWrongGroup, gid, hosted)
}

// enter returns the replica of group gid (0: the only one) with the call
// counted in its gate (the caller exits it), or kvpb.ErrWrongGroup, also
// for a replica being retired (Server.Retire).
func (r *Router) enter(gid uint64) (*Server, error) {
	s, err := r.replica(gid)
	if err != nil {
		return nil, err
	}
	if !s.gate.enter() {
		return nil, fmt.Errorf("%w: this process no longer hosts group %d", kvpb.ErrWrongGroup, s.cfg.GID)
	}
	return s, nil
}

// grouped is a request that names its group.
type grouped interface{ GetGroup() uint64 }

// unary serves a unary request through its group's replica's method f.
func unary[Req grouped, Rep any](r *Router, ctx context.Context, req Req, f func(*Server, context.Context, Req) (Rep, error)) (Rep, error) {
	s, err := r.enter(req.GetGroup())
	if err != nil {
		var none Rep
		return none, kvpb.Errors.ToStatus(err)
	}
	defer s.gate.exit()
	return f(s, ctx, req)
}

// streamed serves a streaming request through its group's replica's
// method f.
func streamed[Req grouped, Stream any](r *Router, req Req, stream Stream, f func(*Server, Req, Stream) error) error {
	s, err := r.enter(req.GetGroup())
	if err != nil {
		return kvpb.Errors.ToStatus(err)
	}
	defer s.gate.exit()
	return f(s, req, stream)
}

// kvRoutes serves kvpb.KV through a Router.
type kvRoutes struct {
	kvpb.UnimplementedKVServer
	r *Router
}

// Get implements kvpb.KVServer.
func (k kvRoutes) Get(ctx context.Context, req *kvpb.GetRequest) (*kvpb.GetReply, error) {
	return unary(k.r, ctx, req, (*Server).Get)
}

// Write implements kvpb.KVServer.
func (k kvRoutes) Write(ctx context.Context, req *kvpb.WriteRequest) (*kvpb.WriteReply, error) {
	return unary(k.r, ctx, req, (*Server).Write)
}

// List implements kvpb.KVServer.
func (k kvRoutes) List(ctx context.Context, req *kvpb.ListRequest) (*kvpb.ListReply, error) {
	return unary(k.r, ctx, req, (*Server).List)
}

// Status implements kvpb.KVServer.
func (k kvRoutes) Status(ctx context.Context, req *kvpb.StatusRequest) (*kvpb.StatusReply, error) {
	return unary(k.r, ctx, req, (*Server).Status)
}

// Batch implements kvpb.KVServer: every op is served as its own Get or
// Write would be (routed by its group, with its own deadline from the
// batch's arrival), and none waits for another's outcome; an op's failure
// is its result, never the batch's. Permissions are checked op by op
// before the batch gets here (auth.Guard).
//
// The handler's goroutine queues the writes, one after another, so that
// they share raft entries, and then waits for their outcomes: a goroutine
// per write would cost a hand-off each only to wait. A write finding its
// group's queue full goes to a worker instead, to wait for room there
// without holding up the others. The gets of one group share one read
// index (batchGets), asked once all of them have arrived; the gets of
// every group but one are served on workers, so that no group's read
// round waits for another's.
func (k kvRoutes) Batch(ctx context.Context, req *kvpb.BatchRequest) (*kvpb.BatchReply, error) {
	arrived := time.Now()
	ops := req.GetOps()
	if len(ops) > kvpb.MaxBatchOps {
		return nil, kvpb.Errors.ToStatus(fmt.Errorf("%w: a batch of %d ops (at most %d)", rpcerr.ErrMalformed, len(ops), kvpb.MaxBatchOps))
	}
	results := make([]*kvpb.BatchResult, len(ops))
	var (
		wg       sync.WaitGroup
		writes   []batchWrite
		gets     = map[uint64][]int{} // group -> its gets' places in the batch
		getOrder []uint64             // the groups of gets, in order of first get
	)
	onWorker := func(f func()) {
		wg.Add(1)
		k.r.ops.run(func() {
			defer wg.Done()
			f()
		})
	}
	for i, op := range ops {
		switch o := op.GetOp().(type) {
		case *kvpb.BatchOp_Get:
			g := o.Get.GetGroup()
			if _, ok := gets[g]; !ok {
				getOrder = append(getOrder, g)
			}
			gets[g] = append(gets[g], i)
		case *kvpb.BatchOp_Write:
		default:
			results[i] = k.batchOp(ctx, op, arrived) // malformed: answered at once
		}
	}
	for n, g := range getOrder {
		if n < len(getOrder)-1 {
			idx := gets[g]
			onWorker(func() { k.batchGets(ctx, ops, idx, arrived, results) })
		}
	}
	for i, op := range ops {
		w, ok := op.GetOp().(*kvpb.BatchOp_Write)
		if !ok {
			continue
		}
		if b, queued := k.startBatchWrite(ctx, i, op, w.Write, arrived); queued {
			writes = append(writes, b)
		} else if b.res != nil {
			results[i] = b.res
		} else {
			onWorker(func() { results[i] = k.batchOp(ctx, op, arrived) }) // its group's queue is full
		}
	}
	if n := len(getOrder); n > 0 {
		k.batchGets(ctx, ops, gets[getOrder[n-1]], arrived, results)
	}
	for _, w := range writes {
		results[w.i] = w.finish()
	}
	wg.Wait()
	fitReply(results)
	return &kvpb.BatchReply{Results: results}, nil
}

// batchGets serves the gets ops[idx] of one group, filling results[idx],
// each answered as its own Get would be: one read index serves them all,
// since every one of them arrived before it was asked (Raft §6.4: a read
// is linearizable once the applied index reaches a read index confirmed
// after the read began). A get whose own deadline passes before the read
// index is confirmed fails with it, as its own call would have.
func (k kvRoutes) batchGets(ctx context.Context, ops []*kvpb.BatchOp, idx []int, arrived time.Time, results []*kvpb.BatchResult) {
	s, err := k.r.enter(ops[idx[0]].GetGet().GetGroup())
	if err != nil {
		for _, i := range idx {
			results[i] = kvpb.ErrorResult(kvpb.Errors.ToStatus(err))
		}
		return
	}
	defer s.gate.exit()
	start := time.Now()
	fail := func(i int, err error) {
		s.observe("get", err, start)
		results[i] = kvpb.ErrorResult(kvpb.Errors.ToStatus(err))
	}
	// The read index is waited for until the last of the gets' deadlines
	// (the batch's own, if one of them has none).
	live := make([]int, 0, len(idx))
	var last time.Time
	bounded := true
	for _, i := range idx {
		req := ops[i].GetGet()
		if err := s.precheckRead(req.GetKey()); err != nil {
			fail(i, err) // fail fast; checked again after the read index
			continue
		}
		live = append(live, i)
		if d, ok := opDeadline(ops[i], arrived); ok {
			if d.After(last) {
				last = d
			}
		} else {
			bounded = false
		}
	}
	if len(live) == 0 {
		return
	}
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if bounded {
		rctx, cancel = context.WithDeadline(ctx, last)
	}
	err = rctx.Err() // every deadline passed already: no round to ask
	if err == nil {
		err = s.node.ReadIndex(rctx)
	}
	cancel()
	for _, i := range live {
		// Read one after another: a get whose deadline passed while the
		// round or the reads before it ran fails as its own call would.
		if d, ok := opDeadline(ops[i], arrived); ok && time.Now().After(d) {
			fail(i, context.DeadlineExceeded)
			continue
		}
		if err != nil {
			fail(i, err)
			continue
		}
		reply, rerr := s.readLocal(ops[i].GetGet().GetKey())
		if rerr != nil {
			fail(i, rerr)
			continue
		}
		s.observe("get", nil, start)
		results[i] = &kvpb.BatchResult{Result: &kvpb.BatchResult_Get{Get: reply}}
	}
}

// opDeadline is op's own deadline, which runs from the batch's arrival,
// and whether it has one.
func opDeadline(op *kvpb.BatchOp, arrived time.Time) (time.Time, bool) {
	if ms := op.GetTimeoutMs(); ms > 0 {
		return arrived.Add(time.Duration(ms) * time.Millisecond), true
	}
	return time.Time{}, false
}

// opContext is ctx bounded by op's own deadline, which runs from the
// batch's arrival.
func opContext(ctx context.Context, op *kvpb.BatchOp, arrived time.Time) (context.Context, context.CancelFunc) {
	if d, ok := opDeadline(op, arrived); ok {
		return context.WithDeadline(ctx, d)
	}
	return ctx, func() {}
}

// batchWrite is a write of a KV.Batch queued by startBatchWrite and
// answered by finish.
type batchWrite struct {
	i      int // its op's place in the batch
	s      *Server
	ctx    context.Context
	cancel context.CancelFunc
	w      *queuedWrite
	op     string // for the metrics
	start  time.Time
	res    *kvpb.BatchResult // the answer of a write refused before it was queued
}

// startBatchWrite routes and queues the write req, op i of a batch, as
// Write would, without waiting for room in its group's queue. It reports
// whether the write was queued; if not, either b.res is its answer (it was
// refused) or the queue was full and nothing was done.
func (k kvRoutes) startBatchWrite(ctx context.Context, i int, op *kvpb.BatchOp, req *kvpb.WriteRequest, arrived time.Time) (b batchWrite, queued bool) {
	b = batchWrite{i: i, op: opName(req.GetOp())}
	b.ctx, b.cancel = opContext(ctx, op, arrived)
	s, err := k.r.enter(req.GetGroup())
	if err != nil {
		b.cancel()
		b.res = kvpb.ErrorResult(kvpb.Errors.ToStatus(err))
		return b, false
	}
	b.start = time.Now()
	w, err := s.startWrite(b.ctx, req, false)
	if err != nil {
		s.gate.exit()
		b.cancel()
		if errors.Is(err, errQueueFull) {
			return b, false
		}
		s.observe(b.op, err, b.start)
		b.res = kvpb.ErrorResult(kvpb.Errors.ToStatus(err))
		return b, false
	}
	b.s, b.w = s, w
	return b, true
}

// finish waits for a queued write's outcome and returns its result. The
// latency observed ends when the outcome was known, not when the handler,
// busy with earlier ops of the batch, took it.
func (b batchWrite) finish() *kvpb.BatchResult {
	defer b.cancel()
	defer b.s.gate.exit()
	res, at, err := b.s.awaitWrite(b.ctx, b.w)
	b.s.observeUntil(b.op, err, b.start, at)
	if err != nil {
		return kvpb.ErrorResult(kvpb.Errors.ToStatus(err))
	}
	return &kvpb.BatchResult{Result: &kvpb.BatchResult_Write{Write: b.s.writeReply(res)}}
}

// fitReply keeps a batch's reply within kvpb.MaxBatchReplyBytes: past it,
// a write's value is left out (its answer says so) and a Get is answered
// ErrBatchFull, to be sent alone; both changed nothing more than their
// own call would have.
func fitReply(results []*kvpb.BatchResult) {
	size := 0
	for i, r := range results {
		n := proto.Size(r)
		if size+n > kvpb.MaxBatchReplyBytes {
			switch res := r.GetResult().(type) {
			case *kvpb.BatchResult_Write:
				res.Write.Value, res.Write.ValueReturned = nil, false
			case *kvpb.BatchResult_Get:
				results[i] = kvpb.ErrorResult(kvpb.Errors.ToStatus(fmt.Errorf("%w: a value of %d bytes after %d bytes of replies", kvpb.ErrBatchFull, len(res.Get.GetValue()), size)))
			}
			n = proto.Size(results[i])
		}
		size += n
	}
}

// batchOp serves one op of a batch.
func (k kvRoutes) batchOp(ctx context.Context, op *kvpb.BatchOp, arrived time.Time) *kvpb.BatchResult {
	ctx, cancel := opContext(ctx, op, arrived)
	defer cancel()
	var (
		res = &kvpb.BatchResult{}
		err error
	)
	switch op := op.GetOp().(type) {
	case *kvpb.BatchOp_Get:
		var reply *kvpb.GetReply
		reply, err = k.Get(ctx, op.Get)
		res.Result = &kvpb.BatchResult_Get{Get: reply}
	case *kvpb.BatchOp_Write:
		var reply *kvpb.WriteReply
		reply, err = k.Write(ctx, op.Write)
		res.Result = &kvpb.BatchResult_Write{Write: reply}
	default:
		err = kvpb.Errors.ToStatus(fmt.Errorf("%w: a batched op that is neither a get nor a write", rpcerr.ErrMalformed))
	}
	if err != nil {
		return kvpb.ErrorResult(err)
	}
	return res
}

// Watch implements kvpb.KVServer.
func (k kvRoutes) Watch(req *kvpb.WatchRequest, stream grpc.ServerStreamingServer[kvpb.WatchReply]) error {
	return streamed(k.r, req, stream, (*Server).Watch)
}

// internalRoutes serves grouppb.Handoff and grouppb.Backup through a
// Router.
type internalRoutes struct {
	grouppb.UnimplementedHandoffServer
	grouppb.UnimplementedBackupServer
	r *Router
}

// PullShard implements grouppb.HandoffServer.
func (in internalRoutes) PullShard(req *grouppb.PullShardRequest, stream grpc.ServerStreamingServer[grouppb.ShardChunk]) error {
	return streamed(in.r, req, stream, func(s *Server, req *grouppb.PullShardRequest, stream grpc.ServerStreamingServer[grouppb.ShardChunk]) error {
		return internalAPI{s: s}.PullShard(req, stream)
	})
}

// ReadShards implements grouppb.BackupServer.
func (in internalRoutes) ReadShards(req *grouppb.ReadShardsRequest, stream grpc.ServerStreamingServer[grouppb.BackupChunk]) error {
	return streamed(in.r, req, stream, func(s *Server, req *grouppb.ReadShardsRequest, stream grpc.ServerStreamingServer[grouppb.BackupChunk]) error {
		return internalAPI{s: s}.ReadShards(req, stream)
	})
}

// DeleteShard implements grouppb.HandoffServer.
func (in internalRoutes) DeleteShard(ctx context.Context, req *grouppb.DeleteShardRequest) (*grouppb.DeleteShardReply, error) {
	return unary(in.r, ctx, req, func(s *Server, ctx context.Context, req *grouppb.DeleteShardRequest) (*grouppb.DeleteShardReply, error) {
		return internalAPI{s: s}.DeleteShard(ctx, req)
	})
}

// memberRoutes serves memberpb.Membership through a Router.
type memberRoutes struct {
	memberpb.UnimplementedMembershipServer
	r *Router
}

// service returns the membership service of group gid's replica, or
// memberpb.ErrWrongGroup. Membership requests always name their group.
func (m memberRoutes) service(gid uint64) (memberpb.MembershipServer, error) {
	s, err := m.r.replica(gid)
	if err != nil {
		return nil, memberpb.Errors.ToStatus(fmt.Errorf("%w: %v", memberpb.ErrWrongGroup, err))
	}
	return s.node.MembershipService(s.cfg.ClusterID), nil
}

// List implements memberpb.MembershipServer.
func (m memberRoutes) List(ctx context.Context, req *memberpb.ListRequest) (*memberpb.ListReply, error) {
	svc, err := m.service(req.GetGroup())
	if err != nil {
		return nil, err
	}
	return svc.List(ctx, req)
}

// Change implements memberpb.MembershipServer.
func (m memberRoutes) Change(ctx context.Context, req *memberpb.ChangeRequest) (*memberpb.ListReply, error) {
	svc, err := m.service(req.GetGroup())
	if err != nil {
		return nil, err
	}
	return svc.Change(ctx, req)
}
