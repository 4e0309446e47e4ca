package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// serverFlags are server's flags.
type serverFlags struct {
	r           replicaFlags
	gid         uint64
	controllers string
	g           *globals
}

func newServerCmd(g *globals) *cobra.Command {
	s := &serverFlags{g: g}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run one replica of a replica group",
		Long: `Run one replica of a replica group. On its first start the replica learns
the cluster's id from the controllers (waiting for them); the group serves
shards once 'shardkv admin join' added it to the configuration.`,
		Example: `  shardkv server --group 1 --id 1 --listen 127.0.0.1:7110 --data /var/lib/shardkv/g1r1 \
    --peers 1=127.0.0.1:7110,2=127.0.0.1:7111,3=127.0.0.1:7112 \
    --controllers 127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102
  shardkv admin join 1=127.0.0.1:7110,127.0.0.1:7111,127.0.0.1:7112`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if s.gid == 0 {
				return usagef("--group must be a group id above 0")
			}
			return runReplica(cmd, g, &s.r, s.gid, s.clusterID, s.start)
		},
	}
	s.r.register(cmd)
	cmd.Flags().Uint64Var(&s.gid, "group", 0, "this replica's group id")
	cmd.Flags().StringVar(&s.controllers, "controllers", defaultControllers, "controller addresses, comma separated")
	return setExitCodes(cmd, processExitCodes)
}

// clusterID: a replica without a stored identity learns its cluster from
// the controllers, waiting for them; one with an identity checks it
// against them if they answer within seconds.
func (s *serverFlags) clusterID(ctx context.Context, stored bool) (uint64, error) {
	ctl, err := ctlclient.New(splitList(s.controllers), s.r.tls.peerDial(0)...)
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
		log, _ := s.g.logger()
		log.Warn("waiting for the controllers to learn the cluster id", "err", err)
		if err := rpc.Sleep(ctx, time.Second); err != nil {
			return 0, err
		}
	}
}

// start starts the group replica (a replicaStart).
func (s *serverFlags) start(e *storage.Engine, net transport.Network, cid uint64, gs *grpc.Server, reg prometheus.Registerer) (func(), func() *raftnode.Node, func() error, error) {
	_, ids, _ := parsePeers(s.r.peers)
	log, _ := s.g.logger()
	dial := s.r.tls.peerDial(cid)
	ctl, err := ctlclient.New(splitList(s.controllers), dial...)
	if err != nil {
		return nil, nil, nil, err
	}
	pool := rpc.NewPool(dial...)
	srv, err := groupserver.Start(groupserver.Config{GID: s.gid, ID: s.r.id, ClusterID: cid, Peers: ids, Engine: e, Network: net,
		Controller: ctl, Logger: log, Metrics: groupserver.NewMetrics(reg, s.gid, s.r.id), Tune: s.r.tune, Pool: pool, Dial: s.r.tls.tlsDial()})
	if err != nil {
		ctl.Close()
		pool.Close()
		return nil, nil, nil, err
	}
	srv.Register(gs)
	return func() { srv.Stop(); ctl.Close(); pool.Close() }, srv.Node, srv.Ready, nil
}
