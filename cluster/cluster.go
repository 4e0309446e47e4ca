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
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/controller/ctlserver"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/group/groupserver"
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
	// JoinAll joins every group when the cluster starts (idempotent on
	// restart).
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
}

// ErrGroupsMissing: the cluster's configuration has groups that Start was
// not asked to run (a data directory started with fewer --groups).
var ErrGroupsMissing = errors.New("cluster: configuration has groups that are not started")

// Replica identifies a replica: group 0 is the controller.
type Replica struct{ Group, ID uint64 }

type member struct {
	addr   string
	engine *storage.Engine // own engine, when EnginePerReplica
	grpc   *grpc.Server
	ctl    *ctlserver.Server
	grp    *groupserver.Server
	ctlCl  *ctlclient.Client
}

// Cluster is a running in-process cluster.
type Cluster struct {
	opts      Options
	clusterID uint64
	shared    *storage.Engine
	raftSrv   *transport.Server
	raftNet   *transport.GRPCNetwork

	mu      sync.Mutex
	addrs   map[Replica]string
	members map[Replica]*member
}

// Start starts every replica of the cluster described by opts.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("cluster: Options.Dir is required")
	}
	if opts.Groups == 0 {
		opts.Groups = 3
	}
	if opts.Replicas == 0 {
		opts.Replicas = 3
	}
	if opts.Shards == 0 {
		opts.Shards = ctlserver.DefaultShards
	}
	if opts.Controller == 0 {
		opts.Controller = 3
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Storage.Logger == nil {
		opts.Storage.Logger = opts.Logger
	}
	if opts.ClusterToken == "" {
		opts.ClusterToken = "shardkv"
	}
	c := &Cluster{opts: opts, addrs: map[Replica]string{}, members: map[Replica]*member{}}
	port := opts.BasePort
	for _, r := range c.Replicas() {
		var addr string
		if opts.BasePort != 0 {
			addr = fmt.Sprintf("127.0.0.1:%d", port)
			port++
		} else {
			var err error
			if addr, err = FreeAddr(); err != nil {
				return nil, err
			}
		}
		c.addrs[r] = addr
	}
	c.clusterID = storage.ClusterIDFor(opts.ClusterToken, c.membership(ctlserver.Group))
	// Every connection states the cluster id and every server checks it.
	c.opts.DialOptions = append(transport.DialOptions(transport.WithClusterID(c.clusterID)...), opts.DialOptions...)
	c.opts.ServerOptions = transport.ServerOptions(append(transport.CheckClusterID(c.clusterID, opts.Logger), opts.ServerOptions...)...)
	opts = c.opts
	if opts.RaftNetwork == nil {
		c.raftSrv = transport.NewServer()
		c.raftNet = transport.NewGRPCNetwork(c.raftSrv, func(group, id uint64) (string, bool) {
			a, ok := c.addrs[Replica{group, id}]
			return a, ok
		}, opts.DialOptions...)
	}
	if !opts.EnginePerReplica {
		e, err := storage.OpenWith(opts.Dir, opts.Storage)
		if err != nil {
			return nil, err
		}
		c.shared = e
	}
	for _, r := range c.Replicas() {
		if err := c.StartReplica(r); err != nil {
			c.Close()
			return nil, err
		}
	}
	if opts.JoinAll {
		groups := map[uint64][]string{}
		for g := 1; g <= opts.Groups; g++ {
			groups[uint64(g)] = c.GroupAddrs(uint64(g))
		}
		cl, err := c.ControllerClient()
		if err != nil {
			c.Close()
			return nil, err
		}
		defer cl.Close()
		cfg, err := cl.Join(ctx, groups)
		if err != nil && !errors.Is(err, controller.ErrGroupExists) {
			c.Close()
			return nil, fmt.Errorf("join groups: %w", err)
		}
		if err == nil {
			// Groups this process does not run would hold shards nobody
			// serves: refuse rather than strand them.
			highest := uint64(0)
			for gid := range cfg.Groups {
				highest = max(highest, gid)
			}
			if highest > uint64(opts.Groups) {
				c.Close()
				return nil, fmt.Errorf("%w: the cluster in %s has group %d, but only groups 1-%d were started; "+
					"start with --groups %d (and `shardkv admin leave` the extra groups before lowering it)",
					ErrGroupsMissing, opts.Dir, highest, opts.Groups, highest)
			}
		}
	}
	return c, nil
}

// Replicas lists every replica: the controller's, then each group's.
func (c *Cluster) Replicas() []Replica {
	var out []Replica
	for id := 1; id <= c.opts.Controller; id++ {
		out = append(out, Replica{ctlserver.Group, uint64(id)})
	}
	for g := 1; g <= c.opts.Groups; g++ {
		for id := 1; id <= c.opts.Replicas; id++ {
			out = append(out, Replica{uint64(g), uint64(id)})
		}
	}
	return out
}

// ControllerAddrs are the controller replicas' addresses.
func (c *Cluster) ControllerAddrs() []string { return c.GroupAddrs(ctlserver.Group) }

// GroupAddrs are the addresses of group gid's replicas, in id order.
func (c *Cluster) GroupAddrs(gid uint64) []string {
	n := c.opts.Replicas
	if gid == ctlserver.Group {
		n = c.opts.Controller
	}
	var out []string
	for id := 1; id <= n; id++ {
		out = append(out, c.addrs[Replica{gid, uint64(id)}])
	}
	return out
}

// ControllerClient returns a new client of the cluster's controller.
func (c *Cluster) ControllerClient() (*ctlclient.Client, error) {
	return ctlclient.New(c.ControllerAddrs(), c.opts.DialOptions...)
}

// membership is group gid's replicas by id, with their addresses.
func (c *Cluster) membership(gid uint64) map[uint64]string {
	out := map[uint64]string{}
	for _, id := range c.peers(gid) {
		out[id] = c.addrs[Replica{gid, id}]
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

func (c *Cluster) peers(gid uint64) []uint64 {
	n := c.opts.Replicas
	if gid == ctlserver.Group {
		n = c.opts.Controller
	}
	var ids []uint64
	for id := 1; id <= n; id++ {
		ids = append(ids, uint64(id))
	}
	return ids
}

// StartReplica starts (or restarts) one replica on its address and data.
func (c *Cluster) StartReplica(r Replica) error {
	c.mu.Lock()
	if _, ok := c.members[r]; ok {
		c.mu.Unlock()
		return fmt.Errorf("cluster: replica %d/%d already running", r.Group, r.ID)
	}
	c.mu.Unlock()
	m := &member{addr: c.addrs[r]}
	engine := c.shared
	if c.opts.EnginePerReplica {
		e, err := storage.OpenWith(filepath.Join(c.opts.Dir, fmt.Sprintf("g%d-r%d", r.Group, r.ID)), c.opts.Storage)
		if err != nil {
			return err
		}
		m.engine, engine = e, e
	}
	want := storage.Identity{ClusterID: c.clusterID, Peers: c.membership(r.Group)}
	if _, err := engine.EnsureIdentity(storage.Replica{Group: r.Group, ID: r.ID}, want, storage.ClusterNew); err != nil {
		m.stop()
		return err
	}
	network := c.opts.RaftNetwork
	if network == nil {
		network = c.raftNet
	}
	m.grpc = grpc.NewServer(c.opts.ServerOptions...)
	if c.raftSrv != nil {
		c.raftSrv.Register(m.grpc)
	}
	var err error
	if r.Group == ctlserver.Group {
		m.ctl, err = ctlserver.Start(ctlserver.Config{ID: r.ID, Peers: c.peers(r.Group), Engine: engine,
			Network: network, NumShards: c.opts.Shards, Logger: c.opts.Logger, Tune: c.opts.TuneRaft, Time: c.opts.Time,
			UnsafeSkipJoinCheck: c.opts.UnsafeSkipJoinCheck})
		if err == nil {
			m.ctl.Register(m.grpc)
		}
	} else {
		m.ctlCl, err = c.ControllerClient()
		if err == nil {
			var metrics *groupserver.Metrics
			if c.opts.Metrics != nil {
				metrics = c.opts.Metrics(r.Group, r.ID)
			}
			m.grp, err = groupserver.Start(groupserver.Config{GID: r.Group, ID: r.ID, Peers: c.peers(r.Group),
				Engine: engine, Network: network, Controller: m.ctlCl, Limits: c.opts.Limits,
				Logger: c.opts.Logger, DialOptions: c.opts.DialOptions, Tune: c.opts.TuneRaft, Metrics: metrics,
				Time: c.opts.Time})
		}
		if err == nil {
			m.grp.Register(m.grpc)
		}
	}
	if err != nil {
		m.stop()
		return fmt.Errorf("start replica %d of group %d: %w", r.ID, r.Group, err)
	}
	var lis net.Listener
	for i := 0; ; i++ { // a restarted replica's port may linger briefly
		lis, err = net.Listen("tcp", m.addr)
		if err == nil || i == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		m.stop()
		return fmt.Errorf("listen %s: %w", m.addr, err)
	}
	go func() { _ = m.grpc.Serve(lis) }()
	c.mu.Lock()
	c.members[r] = m
	c.mu.Unlock()
	return nil
}

func (m *member) stop() {
	if m.grpc != nil {
		m.grpc.Stop()
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
		c.StopReplica(Replica{gid, id})
	}
}

// StartGroup starts every stopped replica of a group.
func (c *Cluster) StartGroup(gid uint64) error {
	for _, id := range c.peers(gid) {
		c.mu.Lock()
		_, running := c.members[Replica{gid, id}]
		c.mu.Unlock()
		if !running {
			if err := c.StartReplica(Replica{gid, id}); err != nil {
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
	if m := c.members[Replica{ctlserver.Group, id}]; m != nil {
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
		if m.engine != nil {
			out[r] = m.engine
		}
	}
	if c.shared != nil {
		out[Replica{}] = c.shared
	}
	return out
}

// Close stops every replica and closes the engines.
func (c *Cluster) Close() {
	for _, r := range c.Replicas() {
		c.StopReplica(r)
	}
	if c.raftNet != nil {
		c.raftNet.Close()
	}
	if c.shared != nil {
		c.shared.Close()
	}
}
