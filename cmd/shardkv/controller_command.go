package main

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/controller/ctlserver"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

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
		Long: `Run one replica of the shard controller, the Raft group that keeps the
configurations (which group serves which shard). Start every founding
replica with the same --peers; the cluster's id derives from them and
--cluster-token. A replica added later (--initial-cluster-state existing,
after 'shardkv admin member add controller') learns the id from its peers.`,
		Example: `  shardkv controller --id 1 --listen 127.0.0.1:7100 --data /var/lib/shardkv/c1 \
    --peers 1=127.0.0.1:7100,2=127.0.0.1:7101,3=127.0.0.1:7102 --http 127.0.0.1:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			clusterID := func(ctx context.Context, stored bool) (uint64, error) {
				if explicitID != "" {
					id, err := strconv.ParseUint(explicitID, 16, 64)
					if err != nil || id == 0 {
						return 0, usagef("--cluster-id: %q is not a non-zero hexadecimal id", explicitID)
					}
					return id, nil
				}
				peers, _, err := parsePeers(r.peers)
				switch {
				case err != nil:
					return 0, err
				case stored:
					// Whatever is stored: --peers and the token named the
					// cluster when it was created, and a replica added
					// since has other --peers (etcd, too, reads
					// --initial-cluster-token only for a new cluster).
					return 0, nil
				case r.state == string(storage.ClusterExisting):
					// A replica added to the running controllers: its
					// --peers are not the founders', so it learns the id
					// from them.
					cid, err := peersClusterID(ctx, r.id, peers, r.tls.peerDial(0))
					if err != nil {
						// The identity check refuses it then, in its own
						// words; this says why the id is unknown.
						log, _ := g.logger()
						log.Warn("could not learn the cluster id from the other controllers", "peers", peers, "err", err)
					}
					return cid, nil
				}
				return storage.ClusterIDFor(token, peers), nil
			}
			return runReplica(cmd, g, &r, ctlserver.Group, clusterID, func(e *storage.Engine, net transport.Network, cid uint64, gs *grpc.Server, _ prometheus.Registerer, authView *auth.Holder) (func(), []*raftnode.Node, func() error, error) {
				_, ids, _ := parsePeers(r.peers)
				log, _ := g.logger()
				s, err := ctlserver.Start(ctlserver.Config{ID: r.id, ClusterID: cid, Peers: ids, Engine: e, Network: net, NumShards: shards, Logger: log, Tune: r.tune,
					UnsafeSkipJoinCheck: skipCheck, Dial: r.tls.tlsDial(), Auth: authView, ClientCertAuth: r.tls.clientCertAuth(),
					SharedPeerCA: r.tls.sharedPeerCA()})
				if err != nil {
					return nil, nil, nil, err
				}
				s.Register(gs)
				return s.Stop, []*raftnode.Node{s.Node()}, nil, nil
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
	return processCommand(cmd)
}

// peersClusterID is the cluster id the controllers at peers (but id's own
// address) state, asked for a few seconds; 0 and why if none answers (the
// identity check then refuses the start in its own words: no replica to
// join, or no cluster id known).
func peersClusterID(ctx context.Context, id uint64, peers map[uint64]string, dial []grpc.DialOption) (uint64, error) {
	var addrs []string
	for pid, addr := range peers {
		if pid != id {
			addrs = append(addrs, addr)
		}
	}
	ctl, err := ctlclient.New(addrs, dial...)
	if err != nil {
		return 0, err
	}
	defer ctl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return ctl.ClusterID(ctx)
}
