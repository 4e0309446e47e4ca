// Package ctlserver runs one replica of the shard controller: a raft node
// whose state machine is a controller.Store, served over gRPC.
//
// Changes (Join, Leave, Move) are proposed on the leader, stamped with
// replicated time (session.Clock), and answered once applied. Query is linearizable: the leader
// confirms a read index before reading its applied state. Watch is a long
// poll any replica answers from its own applied state, for drivers that
// only need to learn of new configurations promptly.
//
// Auth (auth.go): AuthChange is proposed by the leader like a join, after
// it hashed any password (bcrypt) and, for an enable, made the signing key;
// Authenticate signs tokens on the leader; AuthState is a long poll of the
// public auth state, which group processes follow. The leader refuses to
// enable auth unless the replica serves TLS with client-certificate
// authentication (Config.ClientCertAuth).
//
// Package ctlserver is used by cmd/shardkv and package cluster; its
// Config names options of this module's internal/rpc package, which other
// modules cannot import.
package ctlserver

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/headerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/session"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// Group is the Raft group id of the controller; replica groups are
// numbered from 1.
const Group = 0

// DefaultShards is the shard count of a new cluster unless told otherwise.
const DefaultShards = 64

const (
	// WatchLimit is the longest one Watch call lasts
	// (controllerpb.WatchLimit): the replica then answers with the latest
	// configuration.
	WatchLimit = controllerpb.WatchLimit
	// watchConfirm is how often a waiting Watch confirms its replica is
	// current.
	watchConfirm = 500 * time.Millisecond
)

// Config describes one controller replica.
type Config struct {
	// ID is this replica's Raft id in the controller group; not 0.
	ID    uint64
	Peers []uint64 // Raft ids of every controller replica
	// Engine stores the replica's Raft log and the controller's state.
	// Required.
	Engine *storage.Engine
	// Network connects the replica to the other controller replicas.
	// Required.
	Network   transport.Network
	NumShards int // used only when the cluster is created; default DefaultShards
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tune, if set, adjusts the raft node's configuration (tests shorten
	// snapshot thresholds with it).
	Tune func(*raftnode.Config)
	// Time is the clock the leader stamps commands by (the machine's by
	// default). See session.Clock.
	Time session.TimeSource
	// ClusterID is the cluster's id, stated in every reply's header and
	// which every replica of a joining group must state (the leader asks
	// each replica's Identify and requires this cluster id and the group's
	// id); 0 means the one stored in the replica's identity
	// (storage.Engine.EnsureIdentity).
	ClusterID uint64
	// UnsafeSkipJoinCheck accepts joins without checking the groups'
	// replicas, as before the check existed: only for tests whose groups do
	// not run. A typo in a join then strands shards.
	UnsafeSkipJoinCheck bool
	// Dial are extra options of the connections the replica dials itself
	// (the join check asks the joining replicas who they are): the TLS
	// credentials, rpc.TLS.PeerDial (package internal/rpc).
	Dial []grpc.DialOption
	// ClientCertAuth says the replica serves TLS with client-certificate
	// authentication (rpc.TLS.ClientCertAuth): auth cannot be enabled
	// without it (ErrAuthNeedsTLS).
	ClientCertAuth bool
	// SharedPeerCA says the replica verifies peers with the clients' CAs
	// (rpc.TLS.SharedPeerCA) and was not told to accept it: auth cannot be
	// enabled (ErrSharedPeerCA).
	SharedPeerCA bool
	// Auth, if set, is kept at the replica's applied auth state, for the
	// process's guard (auth.Guard).
	Auth *auth.Holder
	// PasswordCost is bcrypt's cost for the passwords the leader hashes
	// (default bcrypt.DefaultCost; tests lower it).
	PasswordCost int
	// TokenTTL is how long the tokens the replica signs last (default
	// auth.TokenTTL).
	TokenTTL time.Duration
}

// Server is one running controller replica.
type Server struct {
	controllerpb.UnimplementedControllerServer
	cfg       Config
	store     *controller.Store
	engine    *storage.Engine
	node      *raftnode.Node
	log       *slog.Logger
	clock     *session.Clock
	clusterID uint64
	skipCheck bool
	stop      chan struct{}
	done      chan struct{}
	dummyHash []byte // compared when a user does not exist (Authenticate)
}

// Start opens the replica's state and joins the controller group.
func Start(cfg Config) (*Server, error) {
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.NumShards = cmp.Or(cfg.NumShards, DefaultShards)
	cfg.PasswordCost = cmp.Or(cfg.PasswordCost, bcrypt.DefaultCost)
	cfg.TokenTTL = cmp.Or(cfg.TokenTTL, auth.TokenTTL)
	dummy, err := bcrypt.GenerateFromPassword([]byte("no such user"), cfg.PasswordCost)
	if err != nil {
		return nil, fmt.Errorf("bcrypt cost %d: %w", cfg.PasswordCost, err)
	}
	if cfg.NumShards < 1 || cfg.NumShards > controller.MaxShards {
		return nil, fmt.Errorf("%w: %d", controllerpb.ErrInvalidShards, cfg.NumShards)
	}
	log := cfg.Logger.With("component", "controller", "group", Group, "replica", cfg.ID)
	store, err := controller.OpenStore(cfg.Engine, storage.Replica{Group: Group, ID: cfg.ID})
	if err != nil {
		return nil, err
	}
	rc := raftnode.Config{Group: Group, ID: cfg.ID, Peers: cfg.Peers, Engine: cfg.Engine,
		Network: cfg.Network, StateMachine: store, Logger: cfg.Logger.With("component", "controller")}
	if cfg.Tune != nil {
		cfg.Tune(&rc)
	}
	if cfg.ClusterID == 0 {
		id, _, err := cfg.Engine.LoadIdentity(storage.Replica{Group: Group, ID: cfg.ID})
		if err != nil {
			return nil, err
		}
		cfg.ClusterID = id.ClusterID
	}
	if cfg.UnsafeSkipJoinCheck {
		log.Warn("joins are not checked: a join naming a replica that does not exist or is not of its group will strand shards")
	}
	node, err := raftnode.Start(rc)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: store, engine: cfg.Engine, node: node, log: log, clock: session.NewClock(cfg.Time, log),
		clusterID: cfg.ClusterID, skipCheck: cfg.UnsafeSkipJoinCheck, stop: make(chan struct{}), done: make(chan struct{}), dummyHash: dummy}
	go s.initialize(cfg.NumShards)
	go s.publishAuth()
	return s, nil
}

// initialize proposes the shard count until some replica's Init is applied.
// Only the first Init counts, so replicas started with different counts
// agree on the first one proposed.
func (s *Server) initialize(numShards int) {
	defer close(s.done)
	cmd, _ := proto.Marshal(&controllerlogpb.Command{Op: &controllerlogpb.Command_Init{Init: &controllerlogpb.InitRequest{NumShards: uint32(numShards)}}})
	for {
		if _, n, ok := s.store.Query(-1); ok {
			if n != numShards {
				s.log.Warn("cluster keeps its shard count", "shards", n, "asked", numShards)
			}
			return
		}
		if s.node.Status().IsLeader {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := s.node.Propose(ctx, cmd)
			cancel()
			if err == nil {
				s.log.Info("created cluster", "shards", numShards)
			}
		}
		select {
		case <-s.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// header is the header of a reply about configuration num.
func (s *Server) header(num uint64) *headerpb.ResponseHeader {
	st := s.node.Status()
	return &headerpb.ResponseHeader{ClusterId: s.cfg.ClusterID, Group: Group, Replica: st.ID,
		Term: st.Term, AppliedIndex: st.Applied, ConfigNum: num}
}

// Register adds the controller service to g.
func (s *Server) Register(g *grpc.Server) {
	controllerpb.RegisterControllerServer(g, s)
	s.node.RegisterMembership(g, s.cfg.ClusterID)
}

// Node is the replica's raft node, for status and tests.
func (s *Server) Node() *raftnode.Node { return s.node }

// Store is the replica's applied state.
func (s *Server) Store() *controller.Store { return s.store }

// Stop stops the replica. Its engine stays open.
func (s *Server) Stop() {
	close(s.stop)
	<-s.done
	s.node.Stop()
}

// Join implements controllerpb.ControllerServer. Only the leader answers:
// it checks the replicas of every group new to the configuration (it asks
// each replica's Identify and requires this cluster id and the group's id)
// before it proposes, and a failed check is proposed as the join's
// refusal, so that the request's session remembers the verdict.
func (s *Server) Join(ctx context.Context, req *controllerpb.JoinRequest) (*controllerpb.ChangeReply, error) {
	if !s.node.Status().IsLeader {
		return nil, controllerpb.Errors.ToStatus(s.node.NotLeader())
	}
	cmd := &controllerlogpb.Command{Op: &controllerlogpb.Command_Join{Join: req}}
	if s.skipCheck {
		return s.change(ctx, cmd)
	}
	var incarnations map[uint64]uint64
	if groups := s.store.JoinToCheck(req); len(groups) > 0 {
		var r *joinRefusal
		incarnations, r = s.checkJoin(ctx, groups)
		switch {
		case r != nil && ctx.Err() != nil:
			return nil, controllerpb.Errors.ToStatus(ctx.Err()) // nothing proposed
		case r != nil:
			level := slog.LevelWarn
			if r.kind == controllerpb.ErrGroupNotReady || r.kind == controllerpb.ErrReplicaUnreachable {
				// Replicas still starting: what every "start the nodes,
				// then join" sees (shardkv dev too) before it succeeds.
				level = slog.LevelInfo
			}
			s.log.Log(ctx, level, "join refused", "err", r)
			cmd.Refusal = &controllerlogpb.CheckRefusal{Code: controller.RefusalCode(r.kind), Reason: r.reason}
		}
	}
	cmd.Op = &controllerlogpb.Command_Join{Join: checkedJoin(req, incarnations)}
	cmd.Checked = true
	return s.change(ctx, cmd)
}

// checkedJoin is the join a leader proposes for req once it checked the
// groups of incarnations (by id, as their replicas stated them): each such
// group with its stated incarnation, every other with none. An
// incarnation the request names is the caller's word, never recorded: a
// group the check did not see (in the configuration then, and left before
// the join applies) is so refused at apply as unchecked. req is the
// caller's: the result is a copy.
func checkedJoin(req *controllerpb.JoinRequest, incarnations map[uint64]uint64) *controllerpb.JoinRequest {
	join := proto.CloneOf(req)
	for _, g := range join.GetGroups() {
		g.Incarnation = incarnations[g.GetId()]
	}
	return join
}

// SetReplicas implements controllerpb.ControllerServer. Like a join, it
// is checked first: every address the group did not have must answer as a
// replica of the group (to Identify, with this cluster id and the group's
// id).
func (s *Server) SetReplicas(ctx context.Context, req *controllerpb.SetReplicasRequest) (*controllerpb.ChangeReply, error) {
	if !s.node.Status().IsLeader {
		return nil, controllerpb.Errors.ToStatus(s.node.NotLeader())
	}
	cmd := &controllerlogpb.Command{Op: &controllerlogpb.Command_SetReplicas{SetReplicas: req}}
	// Only the new addresses are checked: a replica the configuration
	// already has may be down for a while (it stays a member).
	var fresh []string
	cfg, _, ok := s.store.Query(-1)
	if ok {
		for _, a := range req.GetAddrs() {
			if !slices.Contains(cfg.Groups[req.GetGid()], a) {
				fresh = append(fresh, a)
			}
		}
	}
	if !s.skipCheck && len(fresh) > 0 {
		// A new address must not be another copy of the group id: its
		// replica states the incarnation the group joined with, or none
		// yet (a new member catching up).
		group := &controllerpb.Group{Id: req.GetGid(), Addrs: fresh, Incarnation: cfg.Incarnation(req.GetGid())}
		if _, r := s.checkReplicas(ctx, []*controllerpb.Group{group}, false); r != nil {
			if ctx.Err() != nil {
				return nil, controllerpb.Errors.ToStatus(ctx.Err()) // nothing proposed
			}
			s.log.Warn("replica addresses refused", "group", req.GetGid(), "err", r)
			cmd.Refusal = &controllerlogpb.CheckRefusal{Code: controller.RefusalCode(r.kind), Reason: r.reason}
		}
	}
	return s.change(ctx, cmd)
}

// Leave implements controllerpb.ControllerServer.
func (s *Server) Leave(ctx context.Context, req *controllerpb.LeaveRequest) (*controllerpb.ChangeReply, error) {
	return s.change(ctx, &controllerlogpb.Command{Op: &controllerlogpb.Command_Leave{Leave: req}})
}

// OpenSession implements controllerpb.ControllerServer.
func (s *Server) OpenSession(ctx context.Context, req *controllerpb.OpenSessionRequest) (*controllerpb.ChangeReply, error) {
	return s.change(ctx, &controllerlogpb.Command{Op: &controllerlogpb.Command_OpenSession{OpenSession: req}})
}

// Move implements controllerpb.ControllerServer.
func (s *Server) Move(ctx context.Context, req *controllerpb.MoveRequest) (*controllerpb.ChangeReply, error) {
	return s.change(ctx, &controllerlogpb.Command{Op: &controllerlogpb.Command_Move{Move: req}})
}

func (s *Server) change(ctx context.Context, cmd *controllerlogpb.Command) (*controllerpb.ChangeReply, error) {
	if err := s.engine.Health(); err != nil {
		return nil, controllerpb.Errors.ToStatus(err) // nothing proposed
	}
	cmd.Stamp = s.clock.Stamp(s.store.Now())
	before, _, _ := s.store.Query(-1)
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, rpcerr.Errorf(codes.InvalidArgument, "encode command: %v", err)
	}
	v, err := s.node.Propose(ctx, data)
	if err != nil {
		return nil, controllerpb.Errors.ToStatus(err)
	}
	res, ok := v.(controller.Result)
	if !ok {
		return nil, rpcerr.Errorf(codes.Internal, "unexpected result %T", v)
	}
	if res.Err != nil {
		return nil, controllerpb.Errors.ToStatus(res.Err)
	}
	cfg, _, _ := s.store.Query(int64(res.ConfigNum))
	if cfg.Num > before.Num {
		s.log.Info("configuration changed", "num", cfg.Num, "groups", len(cfg.Groups))
	}
	return &controllerpb.ChangeReply{Header: s.header(cfg.Num), Config: cfg.ToProto()}, nil
}

// Query implements controllerpb.ControllerServer.
func (s *Server) Query(ctx context.Context, req *controllerpb.QueryRequest) (*controllerpb.QueryReply, error) {
	if !s.node.Status().IsLeader {
		return nil, controllerpb.Errors.ToStatus(s.node.NotLeader())
	}
	if err := s.node.ReadIndex(ctx); err != nil {
		return nil, controllerpb.Errors.ToStatus(err)
	}
	cfg, n, ok := s.store.Query(req.GetNum())
	if !ok {
		return nil, controllerpb.Errors.ToStatus(controllerpb.ErrNotInitialized)
	}
	return &controllerpb.QueryReply{Header: s.header(cfg.Num), Config: cfg.ToProto(), NumShards: uint32(n)}, nil
}

// Watch implements controllerpb.ControllerServer: a long poll answered
// with the first configuration after req.After, or with the latest one
// after WatchLimit. Any replica answers, from its applied state; one that
// cannot confirm it is current fails with an Unavailable error within
// about a second, so the caller moves on to another.
func (s *Server) Watch(ctx context.Context, req *controllerpb.WatchRequest) (*controllerpb.QueryReply, error) {
	return longPoll(s, ctx, func() (*controllerpb.QueryReply, bool) {
		cfg, n, ok := s.store.Query(-1)
		if !ok || cfg.Num <= req.GetAfter() {
			return nil, false
		}
		// Committed, so true, even if this replica is behind.
		return &controllerpb.QueryReply{Header: s.header(cfg.Num), Config: cfg.ToProto(), NumShards: uint32(n)}, true
	}, func() (*controllerpb.QueryReply, error) {
		cfg, n, ok := s.store.Query(-1)
		if !ok {
			return nil, controllerpb.ErrNotInitialized
		}
		return &controllerpb.QueryReply{Header: s.header(cfg.Num), Config: cfg.ToProto(), NumShards: uint32(n)}, nil
	})
}

// longPoll answers with ready's reply as soon as it has one (checked again
// whenever the store changes), or with atLimit's after WatchLimit. Only a
// replica that knows it is current answers "nothing new": every
// watchConfirm it confirms a read index (through its leader when a
// follower), and fails with an Unavailable error when it cannot, so a
// poller on a replica cut off from its quorum moves on to another one
// within about a second instead of waiting out the long poll.
func longPoll[R any](s *Server, ctx context.Context, ready func() (R, bool), atLimit func() (R, error)) (R, error) {
	var none R
	// A caller whose deadline comes before WatchLimit gets "nothing new"
	// in time (the last confirmation included), not a deadline error that
	// would make it look elsewhere: a poller can then bound its wait for
	// a silent replica without mistaking a healthy idle one for it. The
	// last confirmation gets watchConfirm, or half the time left when
	// that is shorter: a caller with a short deadline still waits half
	// of it, rather than being answered at once, which would make a
	// caller that polls with such deadlines spin.
	wait, last := WatchLimit, watchConfirm
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		last = max(min(watchConfirm, left/2), 0)
		wait = min(wait, max(left-last-100*time.Millisecond, 0))
	}
	limit := time.NewTimer(wait)
	defer limit.Stop()
	confirm := time.NewTicker(watchConfirm)
	defer confirm.Stop()
	current := func(timeout time.Duration) error {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return s.node.ReadIndex(rctx)
	}
	for {
		changed := s.store.Changed()
		if r, ok := ready(); ok {
			return r, nil
		}
		select {
		case <-changed:
		case <-confirm.C:
			if err := current(watchConfirm); err != nil {
				return none, controllerpb.Errors.ToStatus(fmt.Errorf("%w (long poll: this replica cannot confirm it is current)", rpcerr.ErrReadTimeout))
			}
		case <-limit.C:
			if err := current(last); err != nil {
				return none, controllerpb.Errors.ToStatus(rpcerr.ErrReadTimeout)
			}
			r, err := atLimit()
			return r, controllerpb.Errors.ToStatus(err)
		case <-ctx.Done():
			return none, controllerpb.Errors.ToStatus(ctx.Err())
		case <-s.node.Done():
			return none, controllerpb.Errors.ToStatus(rpcerr.ErrStopped)
		}
	}
}
