package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/ops"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

func newDevCmd(g *globals) *cobra.Command {
	var (
		opts cluster.Options
		http string
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole cluster in one process, with persistent data",
		Long: `Run a whole shardkv cluster in one process: a 3-replica controller and
replica groups of 3 replicas each, every replica on its own port on
127.0.0.1, all of them joined. Data persists under --data, so running it
again finds everything. Ctrl-C or SIGTERM stops it cleanly.`,
		Example: `  shardkv dev
  shardkv dev --data /tmp/kv --groups 5 --shards 128 --base-port 9100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			reg := ops.NewRegistry()
			opts.JoinAll = true
			opts.Logger = log
			opts.Storage = storage.Options{Logger: log, OnStuck: exitStuck, OnFatal: exitStuck}
			opts.Metrics = func(gid, id uint64) *groupserver.Metrics { return groupserver.NewMetrics(reg, gid, id) }
			startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			start := time.Now()
			c, err := cluster.Start(startCtx, opts)
			if err != nil {
				return err
			}
			defer c.Close()
			for _, r := range c.Replicas() {
				node := func() *raftnode.Node {
					if r.Group == 0 {
						if s := c.Controller(r.ID); s != nil {
							return s.Node()
						}
						return nil
					}
					if s := c.Group(r); s != nil {
						return s.Node()
					}
					return nil
				}
				ops.RegisterRaft(reg, r.Group, r.ID, node)
			}
			for _, e := range c.Engines() {
				ops.RegisterStorage(reg, e)
			}
			httpAddr, err := ops.Serve(ctx, http, reg, func() bool { return c.Ready() == nil }, log)
			if err != nil {
				return fmt.Errorf("metrics listener: %w", err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "shardkv dev cluster up in %v, data in %s\n", time.Since(start).Round(time.Millisecond), opts.Dir)
			fmt.Fprintf(out, "  controller  %s\n", strings.Join(c.ControllerAddrs(), ","))
			for gid := 1; gid <= opts.Groups; gid++ {
				fmt.Fprintf(out, "  group %-4d  %s\n", gid, strings.Join(c.GroupAddrs(uint64(gid)), ","))
			}
			fmt.Fprintf(out, "  metrics     http://%s/metrics\n", httpAddr)
			flag := ""
			if ctls := strings.Join(c.ControllerAddrs(), ","); ctls != defaultControllers {
				flag = " --controllers " + ctls
			}
			fmt.Fprintf(out, "try: shardkv put hello world%s && shardkv get hello%s\n", flag, flag)
			<-ctx.Done()
			fmt.Fprintln(out, "shutting down")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "data", "./shardkv-data", "data directory")
	f.IntVar(&opts.Groups, "groups", 3, "replica groups")
	f.IntVar(&opts.Replicas, "replicas", 3, "replicas per group")
	f.IntVar(&opts.Shards, "shards", 64, "shards (fixed when the cluster is first created)")
	f.IntVar(&opts.BasePort, "base-port", 7100, "first port: the controller takes three, the groups the ports after")
	f.StringVar(&http, "http", "127.0.0.1:7090", "address of /metrics, /healthz, /readyz and /debug/pprof")
	return cmd
}
