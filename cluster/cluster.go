// Package cluster runs a whole shardkv cluster in one process: a
// three-replica controller and any number of replica groups, every replica
// with its own gRPC server on 127.0.0.1. `shardkv dev` runs one, and the
// integration tests run many, with faults.
//
// Every replica keeps its state in Pebble under Options.Dir, so a cluster
// restarted on the same directory finds its data. By default all replicas
// share one engine, as the design intends for one process (one fsync stream
// for all). Tests ask for one engine per replica instead, so that a crashed
// replica loses exactly what a crashed process would.
package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/backup"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/controller/ctlserver"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/group/watch"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/session"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// Options describe a cluster. Zero values select the defaults.
type Options struct {
	Dir        string // required: where the data lives
	Groups     int    // replica groups (default 3)
	Replicas   int    // replicas per group (default 3)
	Shards     int    // shards, fixed at creation (default 64)
	Controller int    // controller replicas (default 3)
	// BasePort, if set, puts the controller on BasePort, BasePort+1, ... and
	// the groups' replicas on the ports after them; otherwise every replica
	// gets a free port.
	BasePort int
	// JoinAll joins every group when a new cluster starts (its controller
	// has no configuration yet). A restarted cluster keeps the
	// configuration its operators made: groups that left stay out.
	JoinAll bool
	// RaftNetwork carries raft messages; default: gRPC between the
	// replicas' servers.
	RaftNetwork transport.Network
	// EnginePerReplica gives every replica its own Pebble engine.
	EnginePerReplica bool
	Logger           *slog.Logger
	Limits           group.Limits
	// TuneRaft adjusts every raft node's configuration.
	TuneRaft func(*raftnode.Config)
	// DialOptions and ServerOptions apply to every gRPC connection and
	// server (tests inject faults with interceptors).
	DialOptions   []grpc.DialOption
	ServerOptions []grpc.ServerOption
	// Metrics, if set, builds each group replica's metrics.
	Metrics func(gid, id uint64) *groupserver.Metrics
	// Time is the clock every leader stamps commands by (default: the
	// machine's); tests step its wall clock.
	Time session.TimeSource
	// Storage configures every engine (its logger defaults to Logger).
	Storage storage.Options
	// ClusterToken names a new cluster (default "shardkv"); with the
	// controller's addresses it makes the cluster id.
	ClusterToken string
	// UnsafeSkipJoinCheck makes the controller accept joins without
	// checking the groups' replicas (ctlserver.Config): for tests that join
	// groups that are not running.
	UnsafeSkipJoinCheck bool
	// Nodes, if above 0, places the groups' replicas on that many nodes
	// (the controller's keep their own addresses): replica i of group g
	// on node (g+i-2) mod Nodes, so each group's replicas are on distinct
	// nodes (Replicas must not exceed Nodes). A node is one address, one
	// gRPC server serving every replica it hosts by group
	// (groupserver.Router) and, with EnginePerReplica, one engine; see
	// StopNode and StartNode. 0: every replica on its own address.
	Nodes int
	// Restore, with JoinAll, makes a new cluster from a backup (opened and
	// verified by backup.Open): Dir must not exist or be empty, the shard
	// count is the backup's, and once every group has joined, each shard
	// is loaded into the group that owns it (see Restore). Start returns
	// once every shard is in; Restored says what was loaded.
	Restore *backup.Backup
	// Watch bounds every group replica's watch history and watcher queues;
	// WatchProgress is how often idle watch streams hear progress.
	Watch         watch.Config
	WatchProgress time.Duration
	// AllowSharedPeerCA lets auth be enabled while TLS verifies peers with
	// the clients' CAs (ctlserver.Config.SharedPeerCA).
	AllowSharedPeerCA bool
	// TLS, if set, turns TLS on for every server and connection of the
	// cluster: it is called once the cluster's id is known (peer
	// certificates name it, see rpc.PeerURI) and returns the credentials
	// every replica serves and calls its peers with. rpc.TLS and
	// rpc.PeerURI are of package internal/rpc: only this module (its
	// tests and `shardkv dev`) sets TLS.
	TLS func(clusterID uint64) (*rpc.TLS, error)
	// Auth makes every server enforce the cluster's auth state (see
	// package auth) once it is enabled, which needs TLS with client
	// certificates required. The servers share one view of the state,
	// followed from the controller as a group process follows it (in a
	// real deployment every process follows its own).
	Auth bool
	// PasswordCost is bcrypt's cost of the controller's password hashes
	// (default bcrypt's; tests lower it). TokenTTL is how long the
	// controller's tokens last (default auth.TokenTTL).
	PasswordCost int
	TokenTTL     time.Duration
}

// ErrGroupsMissing: the cluster's configuration has groups that Start was
// not asked to run (a data directory started with fewer --groups).
var ErrGroupsMissing = errors.New("cluster: configuration has groups that are not started")

// Replica identifies a replica: group 0 is the controller.
type Replica = storage.Replica

// NodeOf is the node (0 to nodes-1) that hosts replica id of group gid
// when a cluster's groups run on nodes (Options.Nodes, `shardkv dev
// --processes`, the nemesis suite's Options.Nodes): replica i of group g
// on node (g+i-2) mod nodes, so a group's replicas are on distinct nodes
// when it has no more replicas than there are nodes, and the groups'
// first replicas (their likely leaders at start) spread over the nodes.
// Groups and replica ids start at 1 (the controller, group 0, runs on no
// node).
func NodeOf(gid, id uint64, nodes int) int {
	if gid == 0 || id == 0 {
		panic(fmt.Sprintf("cluster.NodeOf(%d, %d): groups and replica ids start at 1", gid, id))
	}
	return int(gid+id-2) % nodes
}

type member struct {
	addr   string
	engine *storage.Engine // own engine, when EnginePerReplica
	grpc   *grpc.Server    // own server; nil on a node
	node   *node           // the node hosting it, if any
	ctl    *ctlserver.Server
	grp    *groupserver.Server
	ctlCl  *ctlclient.Client
}

// node is a process hosting replicas of several groups: one address, one
// gRPC server and router, and (with EnginePerReplica) one engine.
type node struct {
	addr   string
	grpc   *grpc.Server
	router *groupserver.Router
	engine *storage.Engine
}

// Cluster is a running in-process cluster.
type Cluster struct {
	opts           Options
	clusterID      uint64
	shared         *storage.Engine
	raftSrv        *transport.Server
	raftNet        *transport.GRPCNetwork
	pool           *rpc.Pool          // the groups' connections to one another
	peerDial       []grpc.DialOption  // the TLS credentials of connections to peers (Options.TLS)
	authView       *auth.Holder       // with Options.Auth: what every server enforces
	stopAuth       context.CancelFunc // ends the following of the auth state
	clientCertAuth bool               // the servers require client certificates (auth may be enabled)
	sharedPeerCA   bool               // TLS verifies peers with the clients' CAs and Options.AllowSharedPeerCA is false

	mu      sync.Mutex
	addrs   map[Replica]string
	members map[Replica]*member
	ids     map[uint64][]uint64 // each group's replica ids, the controller's (0) included
	joining map[Replica]bool    // replicas added to a running group (see AddReplica)
	forced  map[Replica]bool    // replicas to start with raftnode's ForceNewCluster
	nodes   []*node             // running nodes, by index (nil: stopped); Options.Nodes
	nodeOf  map[Replica]int     // the node hosting each group replica, with Options.Nodes

	restored RestoreStats // what Options.Restore loaded
}

// Start starts every replica of the cluster described by opts.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, addrs: map[Replica]string{}, members: map[Replica]*member{},
		ids: map[uint64][]uint64{}, joining: map[Replica]bool{}, forced: map[Replica]bool{},
		nodes: make([]*node, opts.Nodes), nodeOf: map[Replica]int{}}
	for g := 0; g <= opts.Groups; g++ {
		n := opts.Replicas
		if g == 0 {
			n = opts.Controller
		}
		for id := 1; id <= n; id++ {
			c.ids[uint64(g)] = append(c.ids[uint64(g)], uint64(id))
		}
	}
	if err := c.place(); err != nil {
		return nil, err
	}
	c.clusterID = storage.ClusterIDFor(opts.ClusterToken, c.membership(ctlserver.Group))
	serve, err := c.serverOptions()
	if err != nil {
		return nil, err
	}
	c.opts.DialOptions = append(rpc.DialOptions(append(rpc.WithClusterID(c.clusterID), c.peerDial...)...), opts.DialOptions...)
	c.opts.ServerOptions = rpc.ServerOptions(append(serve, opts.ServerOptions...)...)
	opts = c.opts
	c.pool = rpc.NewPool(opts.DialOptions...)
	if opts.RaftNetwork == nil {
		c.raftSrv = transport.NewServer()
		c.raftSrv.SetLogger(opts.Logger)
		c.raftNet = transport.NewGRPCNetwork(c.raftSrv, c.addrOf, opts.DialOptions...)
	}
	if !opts.EnginePerReplica {
		e, err := storage.OpenWith(opts.Dir, opts.Storage)
		if err != nil {
			return nil, err
		}
		c.shared = e
	}
	if err := c.startAll(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// withDefaults fills in o's defaults and checks what cannot work.
func (o Options) withDefaults() (Options, error) {
	if o.Dir == "" {
		return o, errors.New("cluster: Options.Dir is required")
	}
	o.Groups = cmp.Or(o.Groups, 3)
	o.Replicas = cmp.Or(o.Replicas, 3)
	if o.Restore != nil {
		if err := checkRestorable(&o); err != nil {
			return o, err
		}
	}
	o.Shards = cmp.Or(o.Shards, ctlserver.DefaultShards)
	o.Controller = cmp.Or(o.Controller, 3)
	o.Logger = cmp.Or(o.Logger, slog.Default())
	o.Storage.Logger = cmp.Or(o.Storage.Logger, o.Logger)
	o.ClusterToken = cmp.Or(o.ClusterToken, "shardkv")
	if o.Nodes > 0 && o.Replicas > o.Nodes {
		return o, fmt.Errorf("cluster: %d replicas per group on %d nodes would put two replicas of a group on one node", o.Replicas, o.Nodes)
	}
	return o, nil
}

// place gives every replica its address: its own, or with Options.Nodes
// a group's replica that of the node NodeOf puts it on (the controller's
// replicas always have their own).
func (c *Cluster) place() error {
	opts := c.opts
	port := opts.BasePort
	nextAddr := func() (string, error) {
		if opts.BasePort != 0 {
			port++
			return fmt.Sprintf("127.0.0.1:%d", port-1), nil
		}
		return FreeAddr()
	}
	var nodeAddrs []string
	for _, r := range c.Replicas() {
		if r.Group != ctlserver.Group && opts.Nodes > 0 {
			continue
		}
		addr, err := nextAddr()
		if err != nil {
			return err
		}
		c.addrs[r] = addr
	}
	for range opts.Nodes {
		addr, err := nextAddr()
		if err != nil {
			return err
		}
		nodeAddrs = append(nodeAddrs, addr)
	}
	for _, r := range c.Replicas() {
		if r.Group != ctlserver.Group && opts.Nodes > 0 {
			n := NodeOf(r.Group, r.ID, opts.Nodes)
			c.addrs[r], c.nodeOf[r] = nodeAddrs[n], n
		}
	}
	return nil
}

// serverOptions are the options every server of the cluster checks its
// callers with: the cluster id, and with Options.TLS certificates and,
// with Options.Auth, users and roles. It sets the peers' dial options to
// go with them.
func (c *Cluster) serverOptions() ([]grpc.ServerOption, error) {
	opts := c.opts
	// Every connection states the cluster id and every server checks it.
	serve := rpc.CheckClusterID(c.clusterID, opts.Logger)
	if opts.TLS == nil {
		return serve, nil
	}
	creds, err := opts.TLS(c.clusterID)
	if err != nil {
		return nil, fmt.Errorf("cluster: TLS: %w", err)
	}
	c.peerDial = creds.PeerDial()
	serve = append(serve, creds.ServerOptions(c.clusterID)...)
	c.clientCertAuth = creds.ClientCertAuth()
	c.sharedPeerCA = creds.SharedPeerCA() && !opts.AllowSharedPeerCA
	if opts.Auth {
		c.authView = &auth.Holder{}
		// Followed from the controller (auth.Follow), by the controllers'
		// servers too: in a cluster of one process they share the groups'
		// guard.
		c.authView.RequireConfirmation(auth.Lease)
		guard := auth.NewGuard(auth.GuardConfig{View: c.authView.View, Logger: opts.Logger, Unconfirmed: c.authView.Unconfirmed,
			IsPeer: func(ctx context.Context) bool { return creds.IsPeer(ctx, c.clusterID) }})
		serve = append(serve, guard.ServerOptions()...)
	}
	return serve, nil
}

// startAll starts every replica, follows the controller's users and roles
// (Options.Auth), joins the groups (Options.JoinAll) and restores a backup
// (Options.Restore). The caller closes the cluster on an error.
func (c *Cluster) startAll(ctx context.Context) error {
	for _, r := range c.Replicas() {
		if err := c.StartReplica(r); err != nil {
			return err
		}
	}
	if c.authView != nil {
		ctl, err := c.ControllerClient()
		if err != nil {
			return err
		}
		actx, cancel := context.WithCancel(context.Background())
		c.stopAuth = func() { cancel(); ctl.Close() }
		go auth.Follow(actx, c.authView, ctl.AuthState, nil, c.opts.Logger)
	}
	if c.opts.JoinAll {
		if err := c.joinAll(ctx); err != nil {
			return err
		}
	}
	if c.opts.Restore != nil {
		st, err := c.Restore(ctx, c.opts.Restore)
		if err != nil {
			return fmt.Errorf("restore from %s: %w", c.opts.Restore.Dir, err)
		}
		c.restored = st
	}
	return nil
}

// joinAll joins groups 1 to Options.Groups to a new cluster: one whose
// controller has no configuration beyond the empty one. A cluster that has
// one keeps it as its operators left it (a group that left stays out), and
// is only checked: groups it has that this process does not run would hold
// shards nobody serves.
func (c *Cluster) joinAll(ctx context.Context) error {
	cl, err := c.ControllerClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	cfg, _, err := cl.Query(ctx, -1)
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	if cfg.Num == 0 {
		groups := map[uint64][]string{}
		for g := 1; g <= c.opts.Groups; g++ {
			groups[uint64(g)] = c.GroupAddrs(uint64(g))
		}
		if cfg, err = cl.Join(ctx, groups); err != nil {
			return fmt.Errorf("join groups: %w", err)
		}
	}
	highest := uint64(0)
	for gid := range cfg.Groups {
		highest = max(highest, gid)
	}
	if highest > uint64(c.opts.Groups) {
		return fmt.Errorf("%w: the cluster in %s has group %d, but only groups 1-%d were started; "+
			"start with --groups %d (and `shardkv admin leave` the extra groups before lowering it)",
			ErrGroupsMissing, c.opts.Dir, highest, c.opts.Groups, highest)
	}
	return nil
}

// ClusterID is the cluster's id (see storage.ClusterIDFor).
func (c *Cluster) ClusterID() uint64 { return c.clusterID }

// Restored says what Options.Restore loaded.
func (c *Cluster) Restored() RestoreStats { return c.restored }

// Replicas lists every replica: the controller's, then each group's.
func (c *Cluster) Replicas() []Replica {
	var out []Replica
	for g := 0; g <= c.opts.Groups; g++ {
		for _, id := range c.peers(uint64(g)) {
			out = append(out, Replica{Group: uint64(g), ID: id})
		}
	}
	return out
}

// addressed adds the cluster's addresses to a network that does not know
// them (an in-memory one).
type addressed struct {
	transport.Network
	addr func(group, id uint64) (string, bool)
}

func (a addressed) Addr(group, id uint64) (string, bool) { return a.addr(group, id) }

func (c *Cluster) addrOf(group, id uint64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.addrs[Replica{Group: group, ID: id}]
	return a, ok
}

// ControllerAddrs are the controller replicas' addresses.
func (c *Cluster) ControllerAddrs() []string { return c.GroupAddrs(ctlserver.Group) }

// GroupAddrs are the addresses of group gid's replicas, in id order.
func (c *Cluster) GroupAddrs(gid uint64) []string {
	var out []string
	for _, id := range c.peers(gid) {
		a, _ := c.addrOf(gid, id)
		out = append(out, a)
	}
	return out
}

// DialOptions are the options of every connection into the cluster (its
// cluster id, and Options.DialOptions).
func (c *Cluster) DialOptions() []grpc.DialOption { return c.opts.DialOptions }

// ControllerClient returns a new client of the cluster's controller.
func (c *Cluster) ControllerClient() (*ctlclient.Client, error) {
	return ctlclient.New(c.ControllerAddrs(), c.opts.DialOptions...)
}

// membership is group gid's replicas by id, with their addresses.
func (c *Cluster) membership(gid uint64) map[uint64]string {
	out := map[uint64]string{}
	for _, id := range c.peers(gid) {
		out[id], _ = c.addrOf(gid, id)
	}
	return out
}

// Ready returns nil when every replica runs, knows its leader, and (for
// groups) has applied a configuration, and every engine accepts writes.
func (c *Cluster) Ready() error {
	for _, e := range c.Engines() {
		if err := e.Health(); err != nil {
			return err
		}
	}
	for _, r := range c.Replicas() {
		c.mu.Lock()
		m := c.members[r]
		c.mu.Unlock()
		if m == nil {
			return fmt.Errorf("replica %d of group %d is not running", r.ID, r.Group)
		}
		node := func() *raftnode.Node {
			if m.ctl != nil {
				return m.ctl.Node()
			}
			return m.grp.Node()
		}()
		if node.Status().Leader == 0 {
			return fmt.Errorf("replica %d of group %d knows no leader", r.ID, r.Group)
		}
		if m.grp != nil {
			if err := m.grp.Ready(); err != nil {
				return fmt.Errorf("replica %d of group %d: %w", r.ID, r.Group, err)
			}
		}
	}
	return nil
}

// peers returns group gid's replica ids (the controller's for 0), in
// order.
func (c *Cluster) peers(gid uint64) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids[gid])
}

// StartReplica starts (or restarts) one replica on its address and data.
func (c *Cluster) StartReplica(r Replica) error {
	c.mu.Lock()
	if _, ok := c.members[r]; ok {
		c.mu.Unlock()
		return fmt.Errorf("cluster: replica %d/%d already running", r.Group, r.ID)
	}
	join, force := c.joining[r], c.forced[r]
	delete(c.forced, r) // once
	c.mu.Unlock()
	addr, _ := c.addrOf(r.Group, r.ID)
	m := &member{addr: addr}
	if n, ok := c.nodeOf[r]; ok {
		return c.startOnNode(m, r, n, join, force)
	}
	engine, err := c.openReplica(m, r, join)
	if err != nil {
		m.stop()
		return err
	}
	m.grpc = c.newServer()
	if err := c.startServer(m, r, engine, c.tune(join, force)); err != nil {
		m.stop()
		return fmt.Errorf("start replica %d of group %d: %w", r.ID, r.Group, err)
	}
	if m.grp != nil {
		router := groupserver.NewRouter()
		_ = router.Add(m.grp)
		router.Register(m.grpc)
	}
	if err := serve(m.grpc, m.addr); err != nil {
		m.stop()
		return err
	}
	c.running(r, m)
	return nil
}

// running records m as replica r, running.
func (c *Cluster) running(r Replica, m *member) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members[r] = m
}

// newServer returns a gRPC server with the cluster's options, serving the
// raft transport when it is gRPC.
func (c *Cluster) newServer() *grpc.Server {
	g := grpc.NewServer(c.opts.ServerOptions...)
	if c.raftSrv != nil {
		c.raftSrv.Register(g)
	}
	return g
}

// serve serves g on addr.
func serve(g *grpc.Server, addr string) error {
	var (
		lis net.Listener
		err error
	)
	for i := 0; ; i++ { // a restarted replica's port may linger briefly
		lis, err = net.Listen("tcp", addr)
		if err == nil || i == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	go func() { _ = g.Serve(lis) }()
	return nil
}

// startOnNode starts group replica r on node n, starting the node first
// if it is not running.
func (c *Cluster) startOnNode(m *member, r Replica, n int, join, force bool) error {
	c.mu.Lock()
	nd := c.nodes[n]
	c.mu.Unlock()
	if nd == nil {
		nd = &node{addr: m.addr, grpc: c.newServer(), router: groupserver.NewRouter(), engine: c.shared}
		if c.opts.EnginePerReplica {
			e, err := storage.OpenWith(filepath.Join(c.opts.Dir, fmt.Sprintf("node%d", n+1)), c.opts.Storage)
			if err != nil {
				return err
			}
			nd.engine = e
		}
		nd.router.Register(nd.grpc)
		if err := serve(nd.grpc, nd.addr); err != nil {
			c.stopNode(nd)
			return err
		}
		c.mu.Lock()
		c.nodes[n] = nd
		c.mu.Unlock()
	}
	m.node = nd
	if err := c.ensureIdentity(nd.engine, r, join); err != nil {
		return err
	}
	if err := c.startServer(m, r, nd.engine, c.tune(join, force)); err != nil {
		m.stop()
		return fmt.Errorf("start replica %d of group %d: %w", r.ID, r.Group, err)
	}
	if err := nd.router.Add(m.grp); err != nil {
		m.stop()
		return err
	}
	c.running(r, m)
	return nil
}

// stop stops a node that failed to start (it hosts no replica yet).
func (c *Cluster) stopNode(nd *node) {
	nd.grpc.Stop()
	if nd.engine != c.shared {
		nd.engine.Close()
	}
}

// Node is a node's address and the replicas it hosts (Options.Nodes).
func (c *Cluster) Node(n int) (addr string, hosted []Replica) {
	for _, r := range c.Replicas() {
		if i, ok := c.nodeOf[r]; ok && i == n {
			hosted = append(hosted, r)
			addr, _ = c.addrOf(r.Group, r.ID)
		}
	}
	return addr, hosted
}

// StopNode stops node n as a crash of its process would: its network
// first, then every replica it hosts, then its engine (with
// EnginePerReplica nothing it had not synced survives).
func (c *Cluster) StopNode(n int) {
	c.mu.Lock()
	nd := c.nodes[n]
	c.nodes[n] = nil
	c.mu.Unlock()
	if nd == nil {
		return
	}
	nd.grpc.Stop()
	_, hosted := c.Node(n)
	var wg sync.WaitGroup
	for _, r := range hosted {
		wg.Go(func() { c.StopReplica(r) })
	}
	wg.Wait()
	c.stopNode(nd)
}

// StartNode starts node n and every replica it hosts.
func (c *Cluster) StartNode(n int) error {
	_, hosted := c.Node(n)
	for _, r := range hosted {
		if err := c.StartReplica(r); err != nil {
			return err
		}
	}
	return nil
}

// openReplica returns r's engine (its own, or the shared one) with r's
// identity checked or recorded.
func (c *Cluster) openReplica(m *member, r Replica, join bool) (*storage.Engine, error) {
	engine := c.shared
	if c.opts.EnginePerReplica {
		e, err := storage.OpenWith(filepath.Join(c.opts.Dir, fmt.Sprintf("g%d-r%d", r.Group, r.ID)), c.opts.Storage)
		if err != nil {
			return nil, err
		}
		m.engine, engine = e, e
	}
	return engine, c.ensureIdentity(engine, r, join)
}

// ensureIdentity checks or records r's identity on engine.
func (c *Cluster) ensureIdentity(engine *storage.Engine, r Replica, join bool) error {
	want := storage.Identity{ClusterID: c.clusterID, Peers: c.membership(r.Group)}
	state := storage.ClusterNew
	if join {
		state = storage.ClusterJoin
	}
	if _, ok, _ := engine.LoadIdentity(r); ok {
		state = storage.ClusterExisting
	}
	_, err := engine.EnsureIdentity(r, want, state)
	return err
}

// startServer starts r's controller or group server on engine and
// registers its services on m.grpc.
func (c *Cluster) startServer(m *member, r Replica, engine *storage.Engine, tune func(*raftnode.Config)) error {
	var network transport.Network = c.raftNet
	if c.opts.RaftNetwork != nil {
		// The replicas still name each other's client addresses (a
		// follower's NOT_LEADER carries the leader's).
		network = addressed{c.opts.RaftNetwork, c.addrOf}
	}
	var err error
	if r.Group == ctlserver.Group {
		m.ctl, err = ctlserver.Start(ctlserver.Config{ID: r.ID, ClusterID: c.clusterID, Peers: c.peers(r.Group), Engine: engine,
			Network: network, NumShards: c.opts.Shards, Logger: c.opts.Logger, Tune: tune, Time: c.opts.Time,
			UnsafeSkipJoinCheck: c.opts.UnsafeSkipJoinCheck, Dial: c.peerDial,
			ClientCertAuth: c.clientCertAuth, SharedPeerCA: c.sharedPeerCA, PasswordCost: c.opts.PasswordCost, TokenTTL: c.opts.TokenTTL})
		if err != nil {
			return err
		}
		m.ctl.Register(m.grpc)
		return nil
	}
	if m.ctlCl, err = c.ControllerClient(); err != nil {
		return err
	}
	var metrics *groupserver.Metrics
	if c.opts.Metrics != nil {
		metrics = c.opts.Metrics(r.Group, r.ID)
	}
	m.grp, err = groupserver.Start(groupserver.Config{GID: r.Group, ID: r.ID, ClusterID: c.clusterID, Peers: c.peers(r.Group),
		Engine: engine, Network: network, Controller: m.ctlCl, Limits: c.opts.Limits,
		Logger: c.opts.Logger, Pool: c.pool, Dial: c.peerDial, Tune: tune, Metrics: metrics, Time: c.opts.Time,
		Watch: c.opts.Watch, WatchProgress: c.opts.WatchProgress})
	return err
}

func (m *member) stop() {
	if m.grpc != nil {
		m.grpc.Stop()
	}
	if m.node != nil && m.grp != nil {
		m.node.router.Remove(m.grp)
	}
	if m.ctl != nil {
		m.ctl.Stop()
	}
	if m.grp != nil {
		m.grp.Stop()
	}
	if m.ctlCl != nil {
		m.ctlCl.Close()
	}
	if m.engine != nil {
		m.engine.Close()
	}
}

// StopReplica stops one replica as a crash would: its network goes first,
// and nothing it had not synced survives (with EnginePerReplica).
func (c *Cluster) StopReplica(r Replica) {
	c.mu.Lock()
	m := c.members[r]
	delete(c.members, r)
	c.mu.Unlock()
	if m != nil {
		m.stop()
	}
}

// StopGroup stops every replica of a group.
func (c *Cluster) StopGroup(gid uint64) {
	for _, id := range c.peers(gid) {
		c.StopReplica(Replica{Group: gid, ID: id})
	}
}

// StartGroup starts every stopped replica of a group.
func (c *Cluster) StartGroup(gid uint64) error {
	for _, id := range c.peers(gid) {
		c.mu.Lock()
		_, running := c.members[Replica{Group: gid, ID: id}]
		c.mu.Unlock()
		if !running {
			if err := c.StartReplica(Replica{Group: gid, ID: id}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Group returns a running replica of a group, or nil.
func (c *Cluster) Group(r Replica) *groupserver.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[r]; m != nil {
		return m.grp
	}
	return nil
}

// Controller returns a running controller replica, or nil.
func (c *Cluster) Controller(id uint64) *ctlserver.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.members[Replica{Group: ctlserver.Group, ID: id}]; m != nil {
		return m.ctl
	}
	return nil
}

// Engines returns the engine of every running replica (the shared one
// once, without EnginePerReplica).
func (c *Cluster) Engines() map[Replica]*storage.Engine {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[Replica]*storage.Engine{}
	for r, m := range c.members {
		switch {
		case m.engine != nil:
			out[r] = m.engine
		case m.node != nil && m.node.engine != c.shared:
			out[r] = m.node.engine // the same for every replica of the node
		}
	}
	if c.shared != nil {
		out[Replica{}] = c.shared
	}
	return out
}

// Close stops every replica and closes the engines.
//
// Groups stop before the controller, and all replicas of a kind stop at
// once: a group's drivers talk to the controller, and a controller that
// stopped first would leave them waiting for its answers.
func (c *Cluster) Close() {
	if c.stopAuth != nil {
		c.stopAuth()
	}
	var groups, controllers []Replica
	for _, r := range c.Replicas() {
		if r.Group == ctlserver.Group {
			controllers = append(controllers, r)
		} else {
			groups = append(groups, r)
		}
	}
	for _, set := range [][]Replica{groups, controllers} {
		var wg sync.WaitGroup
		for _, r := range set {
			wg.Go(func() { c.StopReplica(r) })
		}
		wg.Wait()
	}
	for n := range c.nodes {
		c.StopNode(n)
	}
	_ = c.pool.Close()
	if c.raftNet != nil {
		c.raftNet.Close()
	}
	if c.shared != nil {
		c.shared.Close()
	}
}
