// Package groupserver runs replicas of replica groups: each a raft node
// whose state machine is a group.StateMachine, and the drivers that move
// the group through configurations. A Router serves the KV, handoff,
// backup, membership and identity services of every replica a process
// hosts (a node) on one gRPC server, each request to the replica of the
// group it names.
//
// The drivers run only on the leader and are driven by replicated state
// alone, so a new leader picks up exactly where the old one stopped. Every
// tick the leader:
//
//   - when no migration is in progress, long-polls the controller for a
//     configuration newer than its own, then fetches current+1 and
//     proposes it;
//   - pulls every Pulling shard from its previous owner (one source group
//     per shard, shards in parallel), proposing each chunk;
//   - asks the previous owner of every Confirming shard to delete its copy,
//     and proposes the acknowledgement.
//
// The drivers never touch the state directly and never hold a lock across
// an RPC or a proposal.
//
// Package groupserver is used by cmd/shardkv and package cluster; its
// Config names types of this module's internal/rpc package, which other
// modules cannot import.
package groupserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/headerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/group/watch"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/session"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// Config describes one group replica.
type Config struct {
	// GID is the replica's group id and ID its Raft id in the group;
	// neither may be 0.
	GID, ID uint64
	// ClusterID is stated in every reply's header.
	ClusterID uint64
	Peers     []uint64 // Raft ids of every replica of the group
	// Engine stores the replica's Raft log and the group's data.
	// Required.
	Engine *storage.Engine
	// Network connects the replica to the rest of its group. Required.
	Network transport.Network
	// Controller is the client the drivers read configurations with.
	Controller *ctlclient.Client
	Limits     group.Limits
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Pool holds the connections to other groups' replicas (shard pulls
	// and deletes); rpc.Pool is of package internal/rpc. A process shares one among its replicas; its owner
	// closes it. Nil: the replica keeps its own, dialled with Dial.
	Pool *rpc.Pool
	// Dial are extra options of the connections the replica dials itself
	// (its own Pool, the identity checks of other replicas): the
	// TLS credentials, rpc.TLS.PeerDial (package internal/rpc).
	Dial []grpc.DialOption
	// TickInterval is how often the leader's drivers look for work
	// (default 50ms).
	TickInterval time.Duration
	// ChunkBytes bounds the data in one pulled chunk and one log entry
	// (default 512 KiB).
	ChunkBytes int
	// Tune, if set, adjusts the raft node's configuration.
	Tune func(*raftnode.Config)
	// Metrics, if set, receives migration and request measurements.
	Metrics *Metrics
	// Time is the clock the leader stamps commands by (the machine's by
	// default; tests step its wall clock). See session.Clock.
	Time session.TimeSource
	// Watch bounds the replica's watch history and watcher queues.
	Watch watch.Config
	// WatchProgress is how often an idle watch stream is told how far it
	// is covered (default 1s; see watch.Watcher.Next).
	WatchProgress time.Duration
}

// Server is one running group replica.
type Server struct {
	kvpb.UnimplementedKVServer
	cfg   Config
	sm    *group.StateMachine
	node  *raftnode.Node
	log   *slog.Logger
	clock *session.Clock
	watch *watch.Hub // the replica's feed of changes (watch.go)
	gate  callGate   // the calls the Router serves through it (Retire)

	ownPool bool // cfg.Pool is this server's to close

	busyMu sync.Mutex
	busy   map[task]bool // driver tasks in flight

	next controller.Config // the configuration after the applied one, once fetched (drive's own)

	syncMu   sync.Mutex
	synced   []uint64  // the voters the controller was last told of (see syncReplicas)
	syncedAt time.Time // when

	identifyDial []grpc.DialOption // for transport.Identify: this cluster's id

	suspects rpc.Suspects // other groups' replicas that let a handoff call time out, tried last

	writes chan *queuedWrite // client writes for the batcher (batch.go)

	latency prometheus.Histogram // every client request's (console.go)
	pulled  pullProgress         // bytes pulled so far, by shard (console.go)

	// ctx ends on Stop: every driver's wait and RPC uses it, so a
	// stopping replica does not wait out a controller long poll.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type task struct {
	kind      byte // 'p' pull, 'd' delete
	configNum uint64
	shard     int
}

// Start opens the replica and starts its raft node and drivers.
func Start(cfg Config) (*Server, error) {
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.TickInterval = cmp.Or(cfg.TickInterval, 50*time.Millisecond)
	cfg.ChunkBytes = cmp.Or(cfg.ChunkBytes, 512<<10)
	cfg.WatchProgress = cmp.Or(cfg.WatchProgress, time.Second)
	ownPool := cfg.Pool == nil
	if ownPool {
		cfg.Pool = rpc.NewPool(rpc.DialOptions(cfg.Dial...)...)
	}
	if cfg.GID == 0 {
		return nil, errors.New("groupserver: group id 0 is reserved")
	}
	sm, err := group.Open(cfg.Engine, storage.Replica{Group: cfg.GID, ID: cfg.ID}, cfg.Limits)
	if err != nil {
		return nil, err
	}
	// Before the node applies anything: the hub's history starts at the
	// state machine's applied index.
	hub := watch.New(sm, cfg.Watch)
	log := cfg.Logger.With("component", "group", "group", cfg.GID, "replica", cfg.ID)
	rc := raftnode.Config{Group: cfg.GID, ID: cfg.ID, Peers: cfg.Peers, Engine: cfg.Engine,
		Network: cfg.Network, StateMachine: sm, Logger: cfg.Logger.With("component", "group")}
	if cfg.Tune != nil {
		cfg.Tune(&rc)
	}
	node, err := raftnode.Start(rc)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, sm: sm, node: node, log: log, clock: session.NewClock(cfg.Time, log), watch: hub,
		busy: map[task]bool{}, ownPool: ownPool, writes: make(chan *queuedWrite, 4*maxBatchWrites), latency: newRequestLatency()}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.identifyDial = rpc.DialOptions(append(rpc.WithClusterID(cfg.ClusterID), cfg.Dial...)...)
	s.wg.Add(2)
	go s.drive()
	go s.batchWrites()
	return s, nil
}

// header is the header of a reply: the replica and its state now.
func (s *Server) header() *headerpb.ResponseHeader {
	st := s.node.Status()
	return &headerpb.ResponseHeader{ClusterId: s.cfg.ClusterID, Group: s.cfg.GID, Replica: s.cfg.ID,
		Term: st.Term, AppliedIndex: st.Applied, ConfigNum: s.sm.ConfigNum()}
}

// Node is the replica's raft node.
func (s *Server) Node() *raftnode.Node { return s.node }

// ErrNoConfiguration: the replica has applied no configuration yet.
var ErrNoConfiguration = errors.New("groupserver: no configuration applied yet")

// Ready reports whether the replica can serve: it has applied a
// configuration, and its storage accepts writes. (The raft side, a known
// leader, is the caller's to check.)
func (s *Server) Ready() error {
	if s.sm.View().Config.Num == 0 {
		return ErrNoConfiguration
	}
	return s.cfg.Engine.Health()
}

// StateMachine is the replica's applied state.
func (s *Server) StateMachine() *group.StateMachine { return s.sm }

// Stop stops the drivers and the raft node. The engine stays open.
func (s *Server) Stop() {
	s.cancel()
	s.node.Stop()
	s.wg.Wait()
	if s.ownPool {
		_ = s.cfg.Pool.Close()
	}
}

// Retire refuses the calls a Router routes to the replica from now on
// (WRONG_GROUP) and waits until those in flight end, or ctx does: after
// it, nothing reads the replica's state through the Router, and a node
// may delete it (cmd/shardkv's Unhost). Call it after Stop, which ends
// the replica's streams.
func (s *Server) Retire(ctx context.Context) error { return s.gate.close(ctx) }

// propose stamps cmd with replicated time, replicates it and returns the
// state machine's outcome.
func (s *Server) propose(ctx context.Context, cmd *grouppb.Command) error {
	p, err := s.submit(ctx, cmd)
	if err != nil {
		return err
	}
	return outcome(ctx, p)
}

// submit stamps cmd with replicated time and appends it to the log without
// waiting for it to apply.
func (s *Server) submit(ctx context.Context, cmd *grouppb.Command) (*raftnode.Pending, error) {
	cmd.Stamp = s.clock.Stamp(s.sm.Now())
	// Encoded once, after room for the entry's header (not copied again).
	data := make([]byte, raftnode.ProposalRoom, raftnode.ProposalRoom+proto.Size(cmd))
	data, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(data, cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", rpcerr.ErrMalformed, err)
	}
	return s.node.SubmitFramed(ctx, data)
}

// outcome waits for a submitted command and returns its outcome.
func outcome(ctx context.Context, p *raftnode.Pending) error {
	_, err := result(ctx, p)
	return err
}

// result waits for a submitted command and returns its result (a write's
// *group.WriteResult), or its outcome if that is an error.
func result(ctx context.Context, p *raftnode.Pending) (any, error) {
	v, err := p.Wait(ctx)
	if err != nil {
		return nil, err
	}
	if o, ok := v.(error); ok {
		return nil, o
	}
	return v, nil
}

func (s *Server) leaderOnly() error {
	if !s.node.Status().IsLeader {
		return s.node.NotLeader()
	}
	return nil
}

// Get implements kvpb.KVServer.
func (s *Server) Get(ctx context.Context, req *kvpb.GetRequest) (*kvpb.GetReply, error) {
	start := time.Now()
	reply, err := s.get(ctx, req)
	s.observe("get", err, start)
	return reply, kvpb.Errors.ToStatus(err)
}

// Any replica serves reads and writes: a follower confirms a read index
// with its leader (etcd serves linearizable reads so) and forwards writes
// to it, so a client cut off from the leader is served by any replica that
// reaches it. Only the leader answers ownership before the log: a follower
// may lag, and the state after the read index (or at apply) decides.
// precheckRead is precheck for a read of key: a delete's check is the
// check of a key alone.
func (s *Server) precheckRead(key []byte) error {
	return s.precheck(kvpb.WriteOp_WRITE_OP_DELETE, key, nil)
}

func (s *Server) precheck(op kvpb.WriteOp, key, value []byte) error {
	if s.node.Status().IsLeader {
		return s.sm.CheckWrite(op, key, value)
	}
	return s.cfg.Limits.Check(op, key, value)
}

func (s *Server) get(ctx context.Context, req *kvpb.GetRequest) (*kvpb.GetReply, error) {
	if err := s.precheckRead(req.GetKey()); err != nil {
		return nil, err // fail fast; checked again after the read index
	}
	if err := s.node.ReadIndex(ctx); err != nil {
		return nil, err
	}
	return s.readLocal(req.GetKey())
}

// readLocal answers a get of key from this replica's state, once a read
// index confirmed after the get arrived is applied.
func (s *Server) readLocal(key []byte) (*kvpb.GetReply, error) {
	v, version, err := s.sm.Get(key)
	if err != nil {
		return nil, err
	}
	return &kvpb.GetReply{Header: s.header(), Value: v, Found: version > 0, Version: version}, nil
}

// List implements kvpb.KVServer: the shards named, read at one
// linearizable point of the group (a read index, then the state machine
// checks it serves them all; see group.StateMachine.List).
func (s *Server) List(ctx context.Context, req *kvpb.ListRequest) (*kvpb.ListReply, error) {
	start := time.Now()
	reply, err := s.list(ctx, req)
	s.observe("list", err, start)
	return reply, kvpb.Errors.ToStatus(err)
}

func (s *Server) list(ctx context.Context, req *kvpb.ListRequest) (*kvpb.ListReply, error) {
	// Fail fast on a bad request; ownership is the applied state's to
	// decide, after the read index.
	if err := s.cfg.Limits.CheckList(req); err != nil {
		return nil, err
	}
	if err := s.node.ReadIndex(ctx); err != nil {
		return nil, err
	}
	kvs, more, err := s.sm.List(req)
	if err != nil {
		return nil, err
	}
	return &kvpb.ListReply{Header: s.header(), Kvs: kvs, More: more}, nil
}

// Write implements kvpb.KVServer.
func (s *Server) Write(ctx context.Context, req *kvpb.WriteRequest) (*kvpb.WriteReply, error) {
	start := time.Now()
	res, err := s.write(ctx, req)
	s.observe(opName(req.GetOp()), err, start)
	if err != nil {
		return nil, kvpb.Errors.ToStatus(err)
	}
	return s.writeReply(res), nil
}

// writeReply is a write's answer.
func (s *Server) writeReply(res *group.WriteResult) *kvpb.WriteReply {
	return &kvpb.WriteReply{Header: s.header(), Succeeded: res.Succeeded, Version: res.Version,
		Value: res.Value, ValueReturned: res.ValueReturned}
}

func opName(op kvpb.WriteOp) string {
	switch op {
	case kvpb.WriteOp_WRITE_OP_PUT:
		return "put"
	case kvpb.WriteOp_WRITE_OP_APPEND:
		return "append"
	case kvpb.WriteOp_WRITE_OP_DELETE:
		return "delete"
	case kvpb.WriteOp_WRITE_OP_OPEN_SESSION:
		return "open_session"
	}
	return "unknown"
}

// write proposes a client write and returns its answer (an opening's is
// an empty success).
func (s *Server) write(ctx context.Context, req *kvpb.WriteRequest) (*group.WriteResult, error) {
	w, err := s.startWrite(ctx, req, true)
	if err != nil {
		return nil, err
	}
	res, _, err := s.awaitWrite(ctx, w)
	return res, err
}

// startWrite checks a client write and queues it (queueWrite, waiting
// for room or not); an error means it was refused, certainly not applied.
func (s *Server) startWrite(ctx context.Context, req *kvpb.WriteRequest, wait bool) (*queuedWrite, error) {
	if err := s.precheck(req.GetOp(), req.GetKey(), req.GetValue()); err != nil {
		return nil, err
	}
	if err := s.cfg.Limits.CheckCondition(req); err != nil {
		return nil, err
	}
	// A replica that cannot persist refuses writes at once (nothing is
	// proposed), rather than queueing them behind a blocked disk.
	if err := s.cfg.Engine.Health(); err != nil {
		return nil, err
	}
	return s.queueWrite(ctx, req, wait)
}

// internalAPI serves grouppb's services for one replica: the handoff
// other groups pull shards with (Handoff) and the reads of a backup
// (Backup); a Router hands it the requests for this replica's group (so a
// replica never answers for a group it is not: a "configuration passed"
// would make the caller give up a pull). They are shardkv's own, so they
// are not methods of Server, whose API is the KV service's.
type internalAPI struct {
	grouppb.UnimplementedHandoffServer
	grouppb.UnimplementedBackupServer
	s *Server
}

// PullShard implements grouppb.HandoffServer. Any replica may answer: an
// offered shard no longer changes. Its data leaves only once the group's
// log holds its handover (Held → Offering), so a configuration that gives
// the shard back to this group cannot take it back once a new owner may
// have some of it, and one applied first makes this pull fail as past its
// configuration.
func (in internalAPI) PullShard(req *grouppb.PullShardRequest, stream grpc.ServerStreamingServer[grouppb.ShardChunk]) error {
	s := in.s
	if !s.sm.HandedOver(req.GetConfigNum(), int(req.GetShard())) {
		// Bounded, so that a puller that reached a replica cut off from
		// its leader soon tries another one.
		ctx, cancel := context.WithTimeout(stream.Context(), rpc.DeadPeerTimeout)
		err := s.propose(ctx, &grouppb.Command{Op: &grouppb.Command_HandOver{HandOver: req}})
		cancel()
		if err != nil {
			return kvpb.Errors.ToStatus(err)
		}
	}
	x, err := s.sm.ExportShard(req.GetConfigNum(), int(req.GetShard()))
	if err != nil {
		return kvpb.Errors.ToStatus(err)
	}
	defer x.Close()
	return kvpb.Errors.ToStatus(x.Chunks(s.cfg.ChunkBytes, stream.Send))
}

// DeleteShard implements grouppb.HandoffServer.
func (in internalAPI) DeleteShard(ctx context.Context, req *grouppb.DeleteShardRequest) (*grouppb.DeleteShardReply, error) {
	s := in.s
	if err := s.leaderOnly(); err != nil {
		return nil, kvpb.Errors.ToStatus(err)
	}
	if err := s.propose(ctx, &grouppb.Command{Op: &grouppb.Command_DeleteShard{DeleteShard: req}}); err != nil {
		return nil, kvpb.Errors.ToStatus(err)
	}
	return &grouppb.DeleteShardReply{}, nil
}

// Status implements kvpb.KVServer.
func (s *Server) Status(_ context.Context, req *kvpb.StatusRequest) (*kvpb.StatusReply, error) {
	st := s.node.Status()
	v := s.sm.View()
	reply := &kvpb.StatusReply{Header: s.header(), Group: s.cfg.GID, Replica: s.cfg.ID, Leader: st.Leader, Term: st.Term,
		Commit: st.Commit, Applied: st.Applied, ConfigNum: v.Config.Num, Requests: s.latencyStatus(), Incarnation: s.sm.Incarnation()}
	if n, err := s.cfg.Engine.DiskUsage(storage.Replica{Group: s.cfg.GID, ID: s.cfg.ID}); err == nil {
		reply.DataBytes = n
	}
	var digests []uint64
	if req.GetDigests() {
		applied, d, err := s.sm.Digests()
		if err != nil {
			return nil, kvpb.Errors.ToStatus(err)
		}
		reply.DigestApplied, digests = applied, d
	}
	for i, sh := range v.Shards {
		if sh.State == group.Absent {
			continue
		}
		st := &kvpb.ShardStatus{Shard: uint32(i), State: shardStates[sh.State], PeerGroup: sh.Peer, MovedBytes: s.pulled.of(i)}
		if i < len(digests) {
			st.Digest = digests[i]
		}
		reply.Shards = append(reply.Shards, st)
	}
	return reply, nil
}

// shardStates names the group's shard states on the wire.
var shardStates = map[group.ShardState]kvpb.ShardState{
	group.Serving:    kvpb.ShardState_SHARD_STATE_SERVING,
	group.Pulling:    kvpb.ShardState_SHARD_STATE_PULLING,
	group.Offering:   kvpb.ShardState_SHARD_STATE_OFFERING,
	group.Confirming: kvpb.ShardState_SHARD_STATE_CONFIRMING,
	group.Held:       kvpb.ShardState_SHARD_STATE_HELD,
	group.Restoring:  kvpb.ShardState_SHARD_STATE_RESTORING,
}

// handoffClient returns the handoff service of the replica at addr.
func (s *Server) handoffClient(addr string) (grouppb.HandoffClient, error) {
	c, err := s.cfg.Pool.Get(addr)
	if err != nil {
		return nil, err
	}
	return grouppb.NewHandoffClient(c), nil
}
