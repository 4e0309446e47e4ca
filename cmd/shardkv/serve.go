package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/controller/ctlserver"
	"github.com/shardkv/shardkv/group/groupserver"
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
}

// tune applies the raft tuning flags.
func (r *replicaFlags) tune(c *raftnode.Config) {
	if r.snapshotEntries > 0 {
		c.SnapshotEntries = r.snapshotEntries
		c.CatchUpEntries = r.snapshotEntries / 4
	}
}

func (r *replicaFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Uint64Var(&r.id, "id", 0, "this replica's id within its group (1, 2, 3, ...)")
	f.StringVar(&r.listen, "listen", "", "address to serve on, e.g. 127.0.0.1:7100")
	f.StringVar(&r.peers, "peers", "", "every replica of the group as id=address, comma separated (this one included)")
	f.StringVar(&r.data, "data", "", "data directory")
	f.StringVar(&r.http, "http", "", "address of /metrics, /healthz, /readyz and /debug/pprof (none if empty)")
	f.Uint64Var(&r.snapshotEntries, "snapshot-entries", 0, "applied entries between log compactions (default 10000)")
	f.StringVar(&r.state, "initial-cluster-state", string(storage.ClusterNew),
		"new: with empty data, found a new group; existing: the data must already hold this replica (empty data is refused)")
}

// parsePeers reads "1=host:port,2=host:port".
func parsePeers(s string) (map[uint64]string, []uint64, error) {
	out := map[uint64]string{}
	var ids []uint64
	for _, part := range strings.Split(s, ",") {
		idStr, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		id, err := strconv.ParseUint(idStr, 10, 64)
		if !ok || err != nil || id == 0 || addr == "" {
			return nil, nil, fmt.Errorf("--peers: %q is not id=address with id > 0", part)
		}
		if _, dup := out[id]; dup {
			return nil, nil, fmt.Errorf("--peers: id %d appears twice", id)
		}
		out[id] = addr
		ids = append(ids, id)
	}
	return out, ids, nil
}

func (r *replicaFlags) check() (map[uint64]string, []uint64, error) {
	if r.id == 0 || r.listen == "" || r.peers == "" || r.data == "" {
		return nil, nil, fmt.Errorf("--id, --listen, --peers and --data are required")
	}
	if r.state != string(storage.ClusterNew) && r.state != string(storage.ClusterExisting) {
		return nil, nil, fmt.Errorf("--initial-cluster-state must be new or existing, not %q", r.state)
	}
	peers, ids, err := parsePeers(r.peers)
	if err != nil {
		return nil, nil, err
	}
	if _, ok := peers[r.id]; !ok {
		return nil, nil, fmt.Errorf("--peers does not list this replica's id %d", r.id)
	}
	return peers, ids, nil
}

// notBootstrapped refuses a first start on empty data when the group's
// leader says this member already acknowledged entries: its data was lost,
// and starting over as a new member could vote twice in a term or drop
// entries it acknowledged (etcd refuses an already bootstrapped member for
// the same reason). Peers that do not answer within seconds are not waited
// for: a new group's replicas start together.
func notBootstrapped(ctx context.Context, gid, id uint64, peers map[uint64]string, clusterID uint64, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for pid, addr := range peers {
		if pid == id {
			continue
		}
		reply, err := transport.AskMember(ctx, addr, gid, id, transport.DialOptions(transport.WithClusterID(clusterID)...)...)
		if err != nil {
			continue
		}
		if reply.GetLeader() && reply.GetMatch() > 0 {
			return fmt.Errorf("storage %s: group %d replica %d: the data directory is empty, but the group's leader (replica %d, term %d) "+
				"has this replica's acknowledgement of its log up to index %d: the replica lost its data. Restore its data directory "+
				"from a backup, or replace the replica; starting it empty could lose acknowledged writes",
				dir, gid, id, pid, reply.GetTerm(), reply.GetMatch())
		}
	}
	return nil
}

// replicaStart builds a replica on the engine and raft network of the
// cluster clusterID and registers its service on g.
// ready, if not nil, adds the replica's own readiness condition.
type replicaStart func(e *storage.Engine, net transport.Network, clusterID uint64, g *grpc.Server, reg prometheus.Registerer) (stop func(), node func() *raftnode.Node, ready func() error, err error)

// exitStuck ends a process whose storage cannot persist, with one clear
// line (see storage.Options.OnStuck and OnFatal).
func exitStuck(err error) {
	fmt.Fprintf(os.Stderr, "shardkv: %v; exiting (nothing acknowledged is lost; restart once the disk is fixed)\n", err)
	os.Exit(2)
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
	ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	// Take the port first: learning the cluster id may take a while, and
	// nothing else may grab the address meanwhile.
	lis, err := net.Listen("tcp", r.listen)
	if err != nil {
		return err
	}
	defer lis.Close()
	e, err := storage.OpenWith(r.data, storage.Options{Logger: log, OnStuck: exitStuck, OnFatal: exitStuck})
	if err != nil {
		return err
	}
	defer e.Close()
	rep := storage.Replica{Group: gid, ID: r.id}
	want := storage.Identity{Peers: peers}
	_, stored, err := e.LoadIdentity(rep)
	if err != nil {
		return err
	}
	if want.ClusterID, err = clusterID(ctx, stored); err != nil {
		return fmt.Errorf("learn the cluster id: %w", err)
	}
	if !stored && r.state == string(storage.ClusterNew) {
		if err := notBootstrapped(ctx, gid, r.id, peers, want.ClusterID, r.data); err != nil {
			return err
		}
	}
	ident, err := e.EnsureIdentity(rep, want, storage.ClusterState(r.state))
	if err != nil {
		return err
	}
	raftSrv := transport.NewServer()
	network := transport.NewGRPCNetwork(raftSrv, func(group, id uint64) (string, bool) {
		a, ok := peers[id]
		return a, ok && group == gid
	}, transport.DialOptions(transport.WithClusterID(ident.ClusterID)...)...)
	defer network.Close()
	gs := grpc.NewServer(transport.ServerOptions(transport.CheckClusterID(ident.ClusterID, log)...)...)
	raftSrv.Register(gs)
	reg := ops.NewRegistry()
	stop, node, ready, err := start(e, network, ident.ClusterID, gs, reg)
	if err != nil {
		return err
	}
	defer stop()
	ops.RegisterRaft(reg, gid, r.id, node)
	ops.RegisterStorage(reg, e)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	if r.http != "" {
		// Ready: a leader is known, the disk accepts writes, and the
		// replica's own condition holds.
		isReady := func() bool {
			return node().Status().Leader != 0 && e.Health() == nil && (ready == nil || ready() == nil)
		}
		if _, err := ops.Serve(ctx, r.http, reg, isReady, log); err != nil {
			return err
		}
	}
	log = log.With("component", "process")
	log.Info("replica serving", "group", gid, "replica", r.id, "listen", r.listen, "data", r.data,
		"cluster", fmt.Sprintf("%016x", ident.ClusterID))
	select {
	case <-ctx.Done():
	case <-node().Done():
		if err := node().Err(); err != nil {
			return fmt.Errorf("replica stopped: %w", err)
		}
	}
	log.Info("replica stopping", "group", gid, "replica", r.id)
	return nil
}

func newControllerCmd(g *globals) *cobra.Command {
	var (
		r          replicaFlags
		shards     int
		token      string
		explicitID string
		skipCheck  bool
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run one replica of the shard controller",
		Example: `  shardkv controller --id 1 --listen 127.0.0.1:7100 --data /var/lib/shardkv/c1 \
    --peers 1=127.0.0.1:7100,2=127.0.0.1:7101,3=127.0.0.1:7102`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			clusterID := func(context.Context, bool) (uint64, error) {
				if explicitID != "" {
					id, err := strconv.ParseUint(explicitID, 16, 64)
					if err != nil || id == 0 {
						return 0, fmt.Errorf("--cluster-id: %q is not a non-zero hexadecimal id", explicitID)
					}
					return id, nil
				}
				peers, _, err := parsePeers(r.peers)
				return storage.ClusterIDFor(token, peers), err
			}
			return runReplica(cmd, g, &r, ctlserver.Group, clusterID, func(e *storage.Engine, net transport.Network, _ uint64, gs *grpc.Server, _ prometheus.Registerer) (func(), func() *raftnode.Node, func() error, error) {
				_, ids, _ := parsePeers(r.peers)
				log, _ := g.logger()
				s, err := ctlserver.Start(ctlserver.Config{ID: r.id, Peers: ids, Engine: e, Network: net, NumShards: shards, Logger: log, Tune: r.tune,
					UnsafeSkipJoinCheck: skipCheck})
				if err != nil {
					return nil, nil, nil, err
				}
				s.Register(gs)
				return s.Stop, s.Node, nil, nil
			})
		},
	}
	r.register(cmd)
	cmd.Flags().IntVar(&shards, "shards", ctlserver.DefaultShards, "number of shards, used only when the cluster is created")
	cmd.Flags().StringVar(&token, "cluster-token", defaultClusterToken,
		"with --peers, names a new cluster: its id is derived from both (as etcd's --initial-cluster-token)")
	cmd.Flags().StringVar(&explicitID, "cluster-id", "",
		"the cluster's id in hexadecimal, instead of deriving it from --cluster-token and --peers (for replicas that see each other at different addresses, as behind NAT or proxies)")
	cmd.Flags().BoolVar(&skipCheck, "unsafe-skip-join-check", false,
		"accept joins without checking that every replica answers as a replica of its group (for tests whose groups do not run: a typo then strands shards)")
	_ = cmd.Flags().MarkHidden("unsafe-skip-join-check")
	return cmd
}

func newServerCmd(g *globals) *cobra.Command {
	var (
		r           replicaFlags
		gid         uint64
		controllers string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run one replica of a replica group",
		Example: `  shardkv server --group 1 --id 1 --listen 127.0.0.1:7110 --data /var/lib/shardkv/g1r1 \
    --peers 1=127.0.0.1:7110,2=127.0.0.1:7111,3=127.0.0.1:7112 \
    --controllers 127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102
  shardkv admin join 1=127.0.0.1:7110,127.0.0.1:7111,127.0.0.1:7112`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if gid == 0 {
				return fmt.Errorf("--group must be a group id above 0")
			}
			// A replica without a stored identity learns its cluster from
			// the controllers, waiting for them; one with an identity checks
			// it against them if they answer within seconds.
			clusterID := func(ctx context.Context, stored bool) (uint64, error) {
				ctl, err := ctlclient.New(splitList(controllers))
				if err != nil {
					return 0, err
				}
				defer ctl.Close()
				if stored {
					ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
					defer cancel()
					id, _ := ctl.ClusterID(ctx)
					return id, nil
				}
				for {
					id, err := ctl.ClusterID(ctx)
					if err == nil || ctx.Err() != nil {
						return id, err
					}
					log, _ := g.logger()
					log.Warn("waiting for the controllers to learn the cluster id", "err", err)
					select {
					case <-time.After(time.Second):
					case <-ctx.Done():
						return 0, ctx.Err()
					}
				}
			}
			return runReplica(cmd, g, &r, gid, clusterID, func(e *storage.Engine, net transport.Network, cid uint64, gs *grpc.Server, reg prometheus.Registerer) (func(), func() *raftnode.Node, func() error, error) {
				_, ids, _ := parsePeers(r.peers)
				log, _ := g.logger()
				dial := transport.DialOptions(transport.WithClusterID(cid)...)
				ctl, err := ctlclient.New(splitList(controllers), dial...)
				if err != nil {
					return nil, nil, nil, err
				}
				s, err := groupserver.Start(groupserver.Config{GID: gid, ID: r.id, Peers: ids, Engine: e, Network: net,
					Controller: ctl, Logger: log, Metrics: groupserver.NewMetrics(reg, gid, r.id), Tune: r.tune, DialOptions: dial})
				if err != nil {
					ctl.Close()
					return nil, nil, nil, err
				}
				s.Register(gs)
				return func() { s.Stop(); ctl.Close() }, s.Node, s.Ready, nil
			})
		},
	}
	r.register(cmd)
	cmd.Flags().Uint64Var(&gid, "group", 0, "this replica's group id")
	cmd.Flags().StringVar(&controllers, "controllers", defaultControllers, "controller addresses, comma separated")
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
