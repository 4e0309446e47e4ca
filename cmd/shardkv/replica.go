package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/transportpb"
	"github.com/shardkv/shardkv/console"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/controller/ctlserver"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/ops"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// replicaFlags are shared by `controller` and `server`.
type replicaFlags struct {
	id              uint64
	listen          string
	peers           string
	data            string
	http            string
	snapshotEntries uint64
	state           string
	join            bool // set at start: a learner added to a running group (storage.ClusterJoin)
	forceNew        bool
	tls             serverTLSFlags
}

// tune applies the raft tuning flags.
func (r *replicaFlags) tune(c *raftnode.Config) {
	if r.snapshotEntries > 0 {
		c.SnapshotEntries = r.snapshotEntries
		c.CatchUpEntries = r.snapshotEntries / 4
	}
	c.Join = r.join
	c.ForceNewCluster = r.forceNew
}

func (r *replicaFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Uint64Var(&r.id, "id", 0, "this replica's id within its group (1, 2, 3, ...)")
	f.StringVar(&r.listen, "listen", "", "address to serve on, e.g. 127.0.0.1:7100")
	f.StringVar(&r.peers, "peers", "", "every replica of the group as id=address, comma separated (this one included)")
	f.StringVar(&r.data, "data", "", "data directory")
	f.StringVar(&r.http, "http", "", "address of /metrics, /healthz, /readyz, /debug/pprof and, on a controller, the web console (none if empty)")
	f.Uint64Var(&r.snapshotEntries, "snapshot-entries", 0, "applied entries between log compactions (default 10000)")
	f.BoolVar(&r.forceNew, "force-new-cluster", false,
		"UNSAFE recovery of a group that lost its quorum for good (etcd's flag): start this replica as its group's only voter, "+
			"keeping what it has committed; writes only the lost replicas had are lost. Start once so, then without it, and add replicas back with 'shardkv admin member'")
	f.StringVar(&r.state, "initial-cluster-state", string(storage.ClusterNew),
		"new: with empty data, found a new group; existing: the data must already hold this replica, or the replica was added "+
			"to its running group with 'shardkv admin member add' (or hosted so by a node) and starts empty (any other empty data is refused)")
	r.tls.register(f)
}

// parsePeers reads "1=host:port,2=host:port".
func parsePeers(s string) (map[uint64]string, []uint64, error) {
	out := map[uint64]string{}
	var ids []uint64
	for _, part := range strings.Split(s, ",") {
		idStr, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		id, err := strconv.ParseUint(idStr, 10, 64)
		if !ok || err != nil || id == 0 || addr == "" {
			return nil, nil, usagef("--peers: %q is not id=address with id > 0", part)
		}
		if _, dup := out[id]; dup {
			return nil, nil, usagef("--peers: id %d appears twice", id)
		}
		out[id] = addr
		ids = append(ids, id)
	}
	return out, ids, nil
}

func (r *replicaFlags) check() (map[uint64]string, []uint64, error) {
	if r.id == 0 || r.listen == "" || r.peers == "" || r.data == "" {
		return nil, nil, usagef("--id, --listen, --peers and --data are required")
	}
	if r.state != string(storage.ClusterNew) && r.state != string(storage.ClusterExisting) {
		return nil, nil, usagef("--initial-cluster-state must be new or existing, not %q", r.state)
	}
	peers, ids, err := parsePeers(r.peers)
	if err != nil {
		return nil, nil, err
	}
	if _, ok := peers[r.id]; !ok {
		return nil, nil, usagef("--peers does not list this replica's id %d", r.id)
	}
	return peers, ids, nil
}

// notBootstrapped refuses a first start on empty data when the group's
// leader says this member already acknowledged entries, or any peer heard
// from it before (recorded on disk: a leader elected since the member last
// ran knows nothing of it): its data was lost, and starting over as a new
// member could vote twice in a term or drop entries it acknowledged (etcd
// refuses an already bootstrapped member for the same reason). Peers that
// do not answer within seconds are not waited for: a new group's replicas
// start together.
//
// It also refuses a founder whose token (storage.Identity.FoundingToken,
// the one it would record) is not the one a fellow founder already
// running states: a create by `admin join --create` finished by flags, or
// the reverse, would split the group (each side dropping the other's
// messages), and one that took a running peer's token could take an old
// copy's. Peers stating no token (0) do not count.
func notBootstrapped(ctx context.Context, gid, id uint64, peers map[uint64]string, token uint64, dial []grpc.DialOption, dir string) error {
	for _, pid := range slices.Sorted(maps.Keys(peers)) {
		if pid == id {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second) // a peer cut off does not hide the next
		reply, err := transport.AskMember(actx, peers[pid], gid, id, dial...)
		cancel()
		if err != nil || !reply.GetHosted() {
			continue
		}
		if t := reply.GetFoundingToken(); t != 0 && t != token {
			return fmt.Errorf("group %d replica %d: replica %d (at %s) runs the group with founding token %016x, and this founder would hold %016x: "+
				"founders started one way (shardkv admin join --create, or --replica flags) cannot be joined by one started the other way, "+
				"whose raft messages they would drop. Start this replica the way the others were: for a create, run the same admin join --create again; "+
				"for founders started by --replica flags, or founded before founding tokens were kept, start it with --replica flags; "+
				"if the running replicas belong to another copy of the group (one that left), found the new group on other nodes",
				gid, id, pid, peers[pid], t, token)
		}
		if reply.GetLeader() && reply.GetMatch() > 0 {
			return fmt.Errorf("storage %s: group %d replica %d: the data directory is empty, but the group's leader (replica %d, term %d) "+
				"has this replica's acknowledgement of its log up to index %d: the replica lost its data. Restore its data directory "+
				"from a backup, or replace the replica; starting it empty could lose acknowledged writes",
				dir, gid, id, pid, reply.GetTerm(), reply.GetMatch())
		}
		if reply.GetHeard() {
			// A leader elected since the replica last ran knows nothing of
			// its acknowledgements; a peer that ever heard from it knows it ran.
			return fmt.Errorf("storage %s: group %d replica %d: the data directory is empty, but replica %d (at %s) heard from this replica before: "+
				"it ran and lost its data. Restore its data directory from a backup, or replace the replica "+
				"(shardkv admin member add a new id, then member replace); starting it empty could vote twice or lose acknowledged writes",
				dir, gid, id, pid, peers[pid])
		}
	}
	return nil
}

// learnerOf asks the group's leader, found among peers within ten
// seconds, whether it has replica id as a learner that has acknowledged
// nothing: it was added with `admin member add` and may start empty
// (etcd's --initial-cluster-state existing for a new member). answered is
// false when no leader answered in that time. token is the founding token
// of the leader's copy of the group, which the learner takes as its own
// (storage.Identity.Token).
func learnerOf(ctx context.Context, gid, id uint64, peers map[uint64]string, dial []grpc.DialOption) (learner bool, token uint64, answered bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Every peer is asked, and the leader of the highest term decides: a
	// deposed leader may still see the replica as a new learner after the
	// real one promoted it. Any leader that has the replica's
	// acknowledgements refuses. The group may be between leaders (one was
	// just restarted): ask again until one answers or the time is up.
	b := rpc.NewBackoff(100*time.Millisecond, time.Second)
	for {
		var best *transportpb.MemberReply
		for pid, addr := range peers {
			if pid == id {
				continue
			}
			reply, err := transport.AskMember(ctx, addr, gid, id, dial...)
			if err != nil || !reply.GetLeader() {
				continue
			}
			if reply.GetMatch() > 0 {
				return false, 0, true
			}
			if best == nil || reply.GetTerm() > best.GetTerm() {
				best = reply
			}
		}
		if best != nil {
			return best.GetLearner(), best.GetFoundingToken(), true
		}
		if rpc.Wait(ctx, b) != nil {
			return false, 0, false
		}
	}
}

// replicaStart starts a process's replicas on the engine and raft network
// of the cluster clusterID, registers their services on g and their
// metrics with reg, and keeps authView at the cluster's auth state (which
// the process's server enforces). ready, if not nil, adds the replicas'
// own readiness condition.
type replicaStart func(e *storage.Engine, net transport.Network, clusterID uint64, g *grpc.Server, reg prometheus.Registerer,
	authView *auth.Holder) (stop func(), nodes []*raftnode.Node, ready func() error, err error)

// exitStuck ends a process whose storage cannot persist, with one clear
// line and its own exit code (see storage.Options.OnStuck and OnFatal).
// A failed disk fails every writer at once: the first one says why and
// exits, the others wait for the exit, so the line stays the only one.
func exitStuck(err error) {
	exitStuckOnce.Do(func() {
		fmt.Fprintf(os.Stderr, "shardkv: %s; exiting (nothing acknowledged is lost; restart once the disk is fixed)\n", describe(err))
		os.Exit(exitStorage)
	})
	select {}
}

var exitStuckOnce sync.Once

// openProcess sets the server GC target (tuneServerGC), reads the TLS
// files (reloaded on SIGHUP until ctx ends), takes the process's address
// and opens its engine. The port is taken first: learning the cluster id
// may take a while, and nothing else may grab the address meanwhile.
func openProcess(ctx context.Context, r *replicaFlags, log *slog.Logger) (net.Listener, *storage.Engine, error) {
	tuneServerGC()
	if err := r.tls.load(ctx, log); err != nil {
		return nil, nil, err
	}
	lis, err := net.Listen("tcp", r.listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("--listen %s is already in use (another shardkv process?)", r.listen)
		}
		return nil, nil, fmt.Errorf("cannot listen on --listen %s (%s)", r.listen, dialFailure(err))
	}
	e, err := storage.OpenWith(r.data, storage.Options{Logger: log, OnStuck: exitStuck, OnFatal: exitStuck})
	if err != nil {
		lis.Close()
		return nil, nil, err
	}
	return lis, e, nil
}

// runReplica serves one replica until SIGINT or SIGTERM. Before anything
// starts it checks the replica's identity (storage.EnsureIdentity):
// clusterID tells the id of the cluster the replica is started in, given
// whether an identity is stored (0: whatever is stored).
func runReplica(cmd *cobra.Command, g *globals, r *replicaFlags, gid uint64,
	clusterID func(ctx context.Context, stored bool) (uint64, error), start replicaStart) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	peers, _, err := r.check()
	if err != nil {
		return err
	}
	ctx, cancel := stopOnSignal(cmd.Context(), log)
	defer cancel()
	lis, e, err := openProcess(ctx, r, log)
	if err != nil {
		return err
	}
	defer lis.Close()
	defer e.Close()
	rep := storage.Replica{Group: gid, ID: r.id}
	_, stored, err := e.LoadIdentity(rep)
	if err != nil {
		return err
	}
	cid, err := clusterID(ctx, stored)
	if err != nil {
		return fmt.Errorf("learn the cluster id: %w", err)
	}
	ident, join, err := ensureIdentity(ctx, e, rep, peers, storage.ClusterState(r.state), cid, r.tls.peerDial(cid), r.data)
	if err != nil {
		return err
	}
	r.join = join
	s := &replicaServer{r: r, hosted: []storage.Replica{rep}, peers: map[uint64]map[uint64]string{gid: peers}, e: e, clusterID: ident.ClusterID, log: log}
	return s.serve(ctx, lis, start)
}

// ensureIdentity checks (or, on a first start, records) replica rep's
// identity: peers its group's membership, state as --initial-cluster-state,
// clusterID the cluster it is started in (0: whatever is stored). join
// reports a learner added to its running group, which starts empty.
func ensureIdentity(ctx context.Context, e *storage.Engine, rep storage.Replica, peers map[uint64]string, state storage.ClusterState,
	clusterID uint64, dial []grpc.DialOption, dir string) (ident storage.Identity, join bool, err error) {
	_, stored, err := e.LoadIdentity(rep)
	if err != nil {
		return storage.Identity{}, false, err
	}
	var token uint64 // see storage.Identity.Token: a learner's, its leader's
	if !stored && state == storage.ClusterNew {
		mine := storage.Identity{ClusterID: clusterID, Peers: peers}.FoundingToken(rep.Group)
		if err := notBootstrapped(ctx, rep.Group, rep.ID, peers, mine, dial, dir); err != nil {
			return storage.Identity{}, false, err
		}
	}
	if !stored && state == storage.ClusterExisting {
		var learner bool
		if learner, token, _ = learnerOf(ctx, rep.Group, rep.ID, peers, dial); learner {
			state, join = storage.ClusterJoin, true
		}
	}
	ident, err = e.EnsureIdentity(rep, storage.Identity{ClusterID: clusterID, Peers: peers, Token: token}, state)
	return ident, join, err
}

// replicaServer is one process's gRPC server and raft network, shared by
// the replicas it hosts. A node adds replicas while it serves (node.Host):
// mu guards what that changes.
type replicaServer struct {
	r         *replicaFlags
	e         *storage.Engine
	clusterID uint64
	log       *slog.Logger

	// Set by serve before any replica starts.
	ctx     context.Context
	reg     *prometheus.Registry
	done    chan *raftnode.Node // a replica that stopped on its own
	network *transport.GRPCNetwork

	mu     sync.Mutex
	hosted []storage.Replica
	peers  map[uint64]map[uint64]string // each hosted group's members: raft id -> address
	nodes  []*raftnode.Node
	// unregister removes each serving replica's raft metrics (unserving).
	unregister map[storage.Replica]func()
}

// addPeers records the members of a group a replica of which is about to
// start here.
func (s *replicaServer) addPeers(group uint64, peers map[uint64]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peers[group] = peers
}

// serving adds a started replica to the process's metrics, readiness and
// watch: the process ends when any replica stops on its own (its storage
// failed), and the others' clients move on to their groups' other
// replicas.
func (s *replicaServer) serving(rep storage.Replica, n *raftnode.Node) {
	s.mu.Lock()
	if !slices.Contains(s.hosted, rep) {
		s.hosted = append(s.hosted, rep)
	}
	s.nodes = append(s.nodes, n)
	if s.unregister == nil {
		s.unregister = map[storage.Replica]func(){}
	}
	s.unregister[rep] = ops.RegisterRaft(s.reg, rep.Group, rep.ID, func() *raftnode.Node { return n })
	s.mu.Unlock()
	go func() {
		select {
		case <-n.Done():
			s.mu.Lock()
			dropped := !slices.Contains(s.nodes, n)
			s.mu.Unlock()
			if dropped {
				return // unhosted: stopped on purpose
			}
			select {
			case s.done <- n:
			case <-s.ctx.Done():
			}
		case <-s.ctx.Done():
		}
	}()
}

// unserving takes replica rep, whose raft node is n, out of the process's
// metrics, readiness, watch and address book, before it is stopped on
// purpose (node.Unhost): its stop does not end the process, and its
// metrics no longer report it.
func (s *replicaServer) unserving(rep storage.Replica, n *raftnode.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosted = slices.DeleteFunc(s.hosted, func(r storage.Replica) bool { return r == rep })
	s.nodes = slices.DeleteFunc(s.nodes, func(m *raftnode.Node) bool { return m == n })
	if unregister, ok := s.unregister[rep]; ok {
		unregister()
		delete(s.unregister, rep)
	}
	delete(s.peers, rep.Group)
}

// serve starts the replicas on lis and serves until ctx ends or a replica
// stops.
func (s *replicaServer) serve(ctx context.Context, lis net.Listener, start replicaStart) error {
	raftSrv := transport.NewServer()
	raftSrv.SetLogger(s.log)
	network := transport.NewGRPCNetwork(raftSrv, func(group, id uint64) (string, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		a, ok := s.peers[group][id]
		return a, ok
	}, s.r.tls.peerDial(s.clusterID)...)
	defer network.Close()
	authView := &auth.Holder{}
	gs := grpc.NewServer(append(s.r.tls.serverOptions(s.clusterID, s.log), s.r.tls.guard(s.clusterID, authView, s.log).ServerOptions()...)...)
	raftSrv.Register(gs)
	s.ctx, s.reg, s.done, s.network = ctx, ops.NewRegistry(), make(chan *raftnode.Node, 1), network
	stop, nodes, ready, err := start(s.e, network, s.clusterID, gs, s.reg, authView)
	if err != nil {
		return err
	}
	defer stop()
	for i, n := range nodes {
		s.serving(s.hosted[i], n)
	}
	ops.RegisterStorage(s.reg, s.e)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	if s.r.http != "" {
		// Ready: every replica knows a leader, the disk accepts writes,
		// and the replicas' own condition holds.
		isReady := func() bool {
			s.mu.Lock()
			nodes := slices.Clone(s.nodes)
			s.mu.Unlock()
			for _, n := range nodes {
				if n.Status().Leader == 0 {
					return false
				}
			}
			return s.e.Health() == nil && (ready == nil || ready() == nil)
		}
		if _, err := ops.Serve(ctx, s.r.http, s.reg, isReady, s.log, s.console(ctx)); err != nil {
			return err
		}
	}
	log := s.log.With("component", "process")
	s.mu.Lock()
	log.Info("replica serving", "replicas", s.hosted, "listen", s.r.listen, "data", s.r.data,
		"cluster", fmt.Sprintf("%016x", s.clusterID))
	s.mu.Unlock()
	select {
	case <-ctx.Done():
	case n := <-s.done:
		if err := n.Err(); err != nil {
			return fmt.Errorf("replica stopped: %w", err)
		}
	}
	s.mu.Lock()
	log.Info("replica stopping", "replicas", s.hosted)
	s.mu.Unlock()
	return nil
}

// console starts the web console in a controller process (nil in a group
// replica): it reads the cluster through this controller and its peers.
func (s *replicaServer) console(ctx context.Context) http.Handler {
	s.mu.Lock()
	controller := len(s.hosted) == 1 && s.hosted[0].Group == ctlserver.Group
	peers := slices.Sorted(maps.Values(s.peers[ctlserver.Group]))
	s.mu.Unlock()
	if !controller {
		return nil
	}
	dial := s.r.tls.peerDial(s.clusterID)
	ctl, err := ctlclient.New(peers, dial...)
	if err != nil {
		s.log.Error("web console disabled", "err", err)
		return nil
	}
	c := console.New(console.Config{Controller: ctl, Dial: dial})
	go func() {
		defer ctl.Close()
		c.Run(ctx)
	}()
	return c.Handler()
}
