package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/backup"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/console"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/ops"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// devControllers is the number of controller replicas dev runs (cluster's
// default).
const devControllers = 3

// devFlags are dev's flags.
type devFlags struct {
	opts    cluster.Options
	http    string
	restore string
}

func newDevCmd(g *globals) *cobra.Command {
	d := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole cluster in one process, with persistent data",
		Long: `Run a whole shardkv cluster in one process: a 3-replica controller and
replica groups of 3 replicas each, every replica on its own port on
127.0.0.1. Data persists under --data, so running it again finds
everything. Ctrl-C or SIGTERM stops it cleanly.

Ports: the controller takes --base-port and the two after it, the groups'
replicas the ports after those, and the web console and /metrics --base-port minus 10 (unless
--http says otherwise). All of them are checked free before anything is
created, so a second dev needs another --base-port (and another --data).

A new data directory is bootstrapped: every group joins. On an existing one
dev keeps the configuration as the operators left it: a group removed with
'shardkv admin leave' stays out (its replicas run, without shards) until
'shardkv admin join' adds it again.

--restore DIR makes a new cluster from a backup ('shardkv admin backup'),
in a new data directory: the backup is verified whole first (a damaged one
is refused, and nothing is created), the cluster gets the backup's shard
count, every group joins, and each shard's data and duplicate table is
loaded into the group that owns it now, through that group's log. Shards
are placed by the new cluster's groups (--groups need not match the
backup's). The cluster is announced once every shard is in. A restore cut
short (the process stopped) leaves a data directory to delete before
trying again.`,
		Example: `  shardkv dev
  shardkv dev --data /tmp/kv --groups 5 --shards 128 --base-port 9100
  shardkv dev --data /tmp/kv2 --base-port 9200 --http 127.0.0.1:0   # beside another dev
  shardkv dev --data /tmp/restored --restore /var/backups/skv-1      # a new cluster from a backup`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return d.run(cmd, g) },
	}
	f := cmd.Flags()
	f.StringVar(&d.opts.Dir, "data", "./shardkv-data", "data directory")
	f.IntVar(&d.opts.Groups, "groups", 3, "replica groups")
	f.IntVar(&d.opts.Replicas, "replicas", 3, "replicas per group")
	f.IntVar(&d.opts.Shards, "shards", 64, "shards (fixed when the cluster is first created)")
	f.IntVar(&d.opts.BasePort, "base-port", 7100, "first port: the controller takes three, the groups the ports after")
	f.StringVar(&d.restore, "restore", "", "make a new cluster from the backup in this directory (shardkv admin backup)")
	f.StringVar(&d.http, "http", "", "address of the web console, /metrics, /healthz, /readyz and /debug/pprof (default 127.0.0.1:<base-port minus 10>)")
	return setExitCodes(cmd, processExitCodes)
}

func (d *devFlags) run(cmd *cobra.Command, g *globals) error {
	tuneServerGC()
	log, err := g.logger()
	if err != nil {
		return err
	}
	if err := d.check(); err != nil {
		return err
	}
	if err := checkPorts(append(d.replicaAddrs(), d.http)); err != nil {
		return err
	}
	startTimeout := 2 * time.Minute
	if d.restore != "" {
		b, err := backup.Open(d.restore) // verified whole before anything is created
		if err != nil {
			return err
		}
		if !cmd.Flags().Changed("shards") {
			d.opts.Shards = 0 // the backup's
		}
		d.opts.Restore = b
		startTimeout = time.Hour
	}
	ctx, stop := stopOnSignal(cmd.Context(), log)
	defer stop()
	reg := ops.NewRegistry()
	d.opts.JoinAll = true
	d.opts.Logger = log
	d.opts.Storage = storage.Options{Logger: log, OnStuck: exitStuck, OnFatal: exitStuck}
	d.opts.Metrics = func(gid, id uint64) *groupserver.Metrics { return groupserver.NewMetrics(reg, gid, id) }
	startCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	start := time.Now()
	c, err := cluster.Start(startCtx, d.opts)
	if err != nil {
		return err
	}
	defer func() {
		stopping := time.Now()
		c.Close()
		log.Info("stopped", "took", time.Since(stopping).Round(time.Millisecond))
	}()
	registerCluster(reg, c)
	ctl, err := c.ControllerClient()
	if err != nil {
		return err
	}
	defer ctl.Close()
	ui := console.New(console.Config{Controller: ctl, Dial: c.DialOptions(), Logger: log})
	go ui.Run(ctx)
	httpAddr, err := ops.Serve(ctx, d.http, reg, func() bool { return c.Ready() == nil }, log, ui.Handler())
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "shardkv dev cluster up in %v, data in %s\n", time.Since(start).Round(time.Millisecond), d.opts.Dir)
	d.printCluster(startCtx, out, c)
	fmt.Fprintf(out, "  console     http://%s/\n", httpAddr)
	fmt.Fprintf(out, "  metrics     http://%s/metrics\n", httpAddr)
	if d.restore != "" {
		st := c.Restored()
		fmt.Fprintf(out, "restored from %s (cluster %s, configuration %d, taken %s): %d shards, %d keys, %d sessions into configuration %d in %v\n",
			d.restore, st.SourceCluster, st.SourceConfig, st.SourceStarted.Format(time.RFC3339), st.Shards, st.Keys, st.Sessions,
			st.ConfigNum, st.Took.Round(time.Millisecond))
	}
	flag := ""
	if ctls := strings.Join(c.ControllerAddrs(), ","); ctls != defaultControllers {
		flag = " --controllers " + ctls
	}
	fmt.Fprintf(out, "try: shardkv put hello world%s && shardkv get hello%s\n", flag, flag)
	<-ctx.Done()
	fmt.Fprintln(out, "shutting down")
	return nil
}

// check refuses flag values dev cannot run with, and fills in --http.
func (d *devFlags) check() error {
	if d.opts.Groups < 1 || d.opts.Replicas < 1 {
		return usagef("--groups and --replicas must be at least 1")
	}
	last := d.opts.BasePort + devControllers + d.opts.Groups*d.opts.Replicas - 1
	if d.opts.BasePort <= 10 || last > 65535 {
		return usagef("--base-port %d: the ports %d to %d must lie between 1 and 65535", d.opts.BasePort, d.opts.BasePort-10, last)
	}
	if d.http == "" {
		d.http = fmt.Sprintf("127.0.0.1:%d", d.opts.BasePort-10)
	}
	return nil
}

// replicaAddrs are the replicas' addresses, as cluster.Start assigns them
// from --base-port: the controller's, then each group's.
func (d *devFlags) replicaAddrs() []string {
	var out []string
	for i := 0; i < devControllers+d.opts.Groups*d.opts.Replicas; i++ {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", d.opts.BasePort+i))
	}
	return out
}

// checkPorts fails when an address is taken, before anything is created.
func checkPorts(addrs []string) error {
	for _, a := range addrs {
		if _, port, _ := net.SplitHostPort(a); port == "0" {
			continue
		}
		l, err := net.Listen("tcp", a)
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s is already in use (another shardkv dev?): give this one another --base-port (and --data); nothing was created", a)
		}
		if err != nil {
			return fmt.Errorf("cannot listen on %s (%s); nothing was created", a, dialFailure(err))
		}
		l.Close()
	}
	return nil
}

// registerCluster exports every replica's raft and storage metrics.
func registerCluster(reg *prometheus.Registry, c *cluster.Cluster) {
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
}

// printCluster prints where every replica listens, and which groups are
// not in the configuration (they left).
func (d *devFlags) printCluster(ctx context.Context, out io.Writer, c *cluster.Cluster) {
	fmt.Fprintf(out, "  controller  %s\n", strings.Join(c.ControllerAddrs(), ","))
	var cfgNum uint64
	inConfig := func(uint64) bool { return true }
	if ctl, err := c.ControllerClient(); err == nil {
		if cfg, _, err := ctl.Query(ctx, -1); err == nil {
			cfgNum = cfg.Num
			inConfig = func(gid uint64) bool { _, ok := cfg.Groups[gid]; return ok }
		}
		ctl.Close()
	}
	for gid := 1; gid <= d.opts.Groups; gid++ {
		addrs := strings.Join(c.GroupAddrs(uint64(gid)), ",")
		fmt.Fprintf(out, "  group %-4d  %s", gid, addrs)
		if !inConfig(uint64(gid)) {
			fmt.Fprintf(out, "  (not in configuration %d: shardkv admin join %d=%s adds it)", cfgNum, gid, addrs)
		}
		fmt.Fprintln(out)
	}
}
