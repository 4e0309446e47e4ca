package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/backup"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/console"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/internal/devcert"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/ops"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// devControllers is the number of controller replicas dev runs (cluster's
// default).
const devControllers = 3

// devFlags are dev's flags.
type devFlags struct {
	opts      cluster.Options
	http      string
	restore   string
	processes int // nodes, each a process; 1: everything in this one
	tls       bool
	certs     *devcert.Local // with --tls, once made (writeCerts)
}

func newDevCmd(g *globals) *cobra.Command {
	d := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole cluster on this machine, with persistent data",
		Long: `Run a whole shardkv cluster on 127.0.0.1: a 3-replica controller and
replica groups of 3 replicas each. By default the groups' replicas run on
three nodes: 'shardkv server' processes started by dev, each hosting one
replica of every group (a group's replicas are always on distinct nodes),
and the controller's replicas are processes too; dev stops them all on
Ctrl-C or SIGTERM. --processes 1 runs everything in dev's own process,
every replica on its own port. Data persists under --data, so running it
again (with the same --processes) finds everything.

Ports: the controller takes --base-port and the two after it. With nodes,
node n takes the port after those plus n-1 and serves /metrics on
--base-port minus 10 plus n; the first controller serves the web console
and its /metrics on --base-port minus 10. In one process the groups'
replicas take the ports after the controller's, and the web console and
/metrics --base-port minus 10 (unless
--http says otherwise). All of them are checked free before anything is
created, so a second dev needs another --base-port (and another --data).

A new data directory is bootstrapped: every group joins. On an existing one
dev keeps the configuration as the operators left it: a group removed with
'shardkv admin leave' stays out (its replicas run, without shards) until
'shardkv admin join' adds it again.

--restore DIR (in one process) makes a new cluster from a backup ('shardkv admin backup'),
in a new data directory: the backup is verified whole first (a damaged one
is refused, and nothing is created), the cluster gets the backup's shard
count, every group joins, and each shard's data and duplicate table is
loaded into the group that owns it now, through that group's log. Shards
are placed by the new cluster's groups (--groups need not match the
backup's). The cluster is announced once every shard is in. A restore cut
short (the process stopped) leaves a data directory to delete before
trying again.

--tls makes a throwaway CA and certificates under DATA/tls (new ones on
every start), and runs every connection with mutual TLS: clients need the
CA and the client certificate, and dev prints the flags that give them.
The replicas read their certificate files again on SIGHUP or when they
change.`,
		Example: `  shardkv dev
  shardkv dev --data /tmp/kv --groups 5 --shards 128 --base-port 9100
  shardkv dev --data /tmp/kv1 --processes 1                          # all in one process
  shardkv dev --data /tmp/kv2 --base-port 9200 --http 127.0.0.1:0   # beside another dev
  shardkv dev --data /tmp/restored --restore /var/backups/skv-1      # a new cluster from a backup
  shardkv dev --tls                                                  # mutual TLS everywhere`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return d.run(cmd, g) },
	}
	f := cmd.Flags()
	f.StringVar(&d.opts.Dir, "data", "./shardkv-data", "data directory")
	f.IntVar(&d.opts.Groups, "groups", 3, "replica groups")
	f.IntVar(&d.opts.Replicas, "replicas", 3, "replicas per group")
	f.IntVar(&d.opts.Shards, "shards", 64, "shards (fixed when the cluster is first created)")
	f.IntVar(&d.opts.BasePort, "base-port", 7100, "first port: the controller takes three, the groups the ports after")
	f.IntVar(&d.processes, "processes", 3, "nodes hosting the groups' replicas, each a process (1: the whole cluster in this process)")
	f.StringVar(&d.restore, "restore", "", "make a new cluster from the backup in this directory (shardkv admin backup)")
	f.BoolVar(&d.tls, "tls", false, "TLS on every connection, with a throwaway CA and certificates under --data/tls; client certificates required")
	f.StringVar(&d.http, "http", "", "address of the web console, /metrics, /healthz, /readyz and /debug/pprof (default 127.0.0.1:<base-port minus 10>)")
	return processCommand(cmd)
}

func (d *devFlags) run(cmd *cobra.Command, g *globals) error {
	tuneServerGC()
	log, err := g.logger()
	if err != nil {
		return err
	}
	if d.restore != "" && !cmd.Flags().Changed("processes") {
		d.processes = 1 // a restore runs in one process
	}
	if err := d.check(); err != nil {
		return err
	}
	if d.processes > 1 {
		if err := checkPorts(d.nodePorts()); err != nil {
			return err
		}
		ctx, stop := stopOnSignal(cmd.Context(), log)
		defer stop()
		return d.runNodes(ctx, cmd, g, log)
	}
	return d.runOneProcess(cmd, log)
}

// runOneProcess runs the whole cluster in this process (--processes 1):
// every replica on one engine, the web console and /metrics on --http.
func (d *devFlags) runOneProcess(cmd *cobra.Command, log *slog.Logger) error {
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
	d.setClusterOptions(ctx, reg, log)
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
	ui := console.New(console.Config{Controller: ctl, Dial: c.DialOptions()})
	go ui.Run(ctx)
	httpAddr, err := ops.Serve(ctx, d.http, reg, func() bool { return c.Ready() == nil }, log, ui.Handler())
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "shardkv dev cluster up in %v, data in %s\n", time.Since(start).Round(time.Millisecond), d.opts.Dir)
	d.announceOneProcess(startCtx, out, c, httpAddr)
	<-ctx.Done()
	fmt.Fprintln(out, "shutting down")
	return nil
}

// setClusterOptions sets what the one-process cluster runs with besides
// the flags: joined at start, logging, storage health, metrics in reg,
// and with --tls certificates made for its cluster id and auth ready.
func (d *devFlags) setClusterOptions(ctx context.Context, reg *prometheus.Registry, log *slog.Logger) {
	d.opts.JoinAll = true
	d.opts.Logger = log
	d.opts.Storage = storage.Options{Logger: log, OnStuck: exitStuck, OnFatal: exitStuck}
	d.opts.Metrics = func(gid, id uint64) *groupserver.Metrics { return groupserver.NewMetrics(reg, gid, id) }
	if d.tls {
		d.opts.TLS = func(clusterID uint64) (*rpc.TLS, error) { return d.makeCerts(ctx, clusterID, log) }
		d.opts.AllowSharedPeerCA = true // one throwaway CA signs every certificate
		// Auth stays off until `shardkv admin auth enable`; then it is
		// enforced, as by the processes of --processes 3.
		d.opts.Auth = true
	} else {
		hangupWithoutTLS(ctx, log)
	}
}

// announceOneProcess prints the one-process cluster's addresses, what a
// restore brought, and a first command to try.
func (d *devFlags) announceOneProcess(ctx context.Context, out io.Writer, c *cluster.Cluster, httpAddr net.Addr) {
	d.printCluster(ctx, out, c)
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
	flag += d.printTLS(out)
	fmt.Fprintf(out, "try: shardkv put hello world%s && shardkv get hello%s\n", flag, flag)
}

// writeCerts makes a new CA and the cluster's certificates under
// --data/tls (absolute paths, for the printed flags): every replica's
// names cluster clusterID (rpc.PeerURI).
func (d *devFlags) writeCerts(clusterID uint64) error {
	dir, err := filepath.Abs(filepath.Join(d.opts.Dir, "tls"))
	if err != nil {
		return err
	}
	if d.certs, err = devcert.WriteLocal(dir, rpc.PeerURI(clusterID)); err != nil {
		return fmt.Errorf("make the dev certificates: %w", err)
	}
	return nil
}

// serverTLS are the replicas' TLS files (writeCerts's): client
// certificates required.
func (d *devFlags) serverTLS() rpc.TLSFiles {
	return rpc.TLSFiles{Cert: d.certs.NodeCert, Key: d.certs.NodeKey, TrustedCA: d.certs.CAFile, ClientCertAuth: true}
}

// makeCerts writes the certificates and returns the replicas' credentials
// (dev in one process), reloaded on SIGHUP until ctx ends.
func (d *devFlags) makeCerts(ctx context.Context, clusterID uint64, log *slog.Logger) (*rpc.TLS, error) {
	if err := d.writeCerts(clusterID); err != nil {
		return nil, err
	}
	creds, err := rpc.LoadTLS(d.serverTLS(), log)
	if err != nil {
		return nil, err
	}
	reloadOnHangup(ctx, creds, log)
	return creds, nil
}

// printTLS says, with --tls, where the certificates are and how to point
// the CLI at them, and returns the CLI's flags (empty without --tls).
func (d *devFlags) printTLS(out io.Writer) string {
	if d.certs == nil {
		return ""
	}
	flags := fmt.Sprintf(" --cacert %s --cert %s --key %s", d.certs.CAFile, d.certs.ClientCert, d.certs.ClientKey)
	fmt.Fprintf(out, "  tls         mutual TLS, a throwaway CA in %s; clients need%s\n", filepath.Dir(d.certs.CAFile), flags)
	fmt.Fprintf(out, "              (or SHARDKV_CACERT=%s SHARDKV_CERT=%s SHARDKV_KEY=%s)\n", d.certs.CAFile, d.certs.ClientCert, d.certs.ClientKey)
	return flags
}

// check refuses flag values dev cannot run with, and fills in --http.
func (d *devFlags) check() error {
	if d.opts.Groups < 1 || d.opts.Replicas < 1 || d.processes < 1 {
		return usagef("--groups, --replicas and --processes must be at least 1")
	}
	if d.http == "" {
		d.http = fmt.Sprintf("127.0.0.1:%d", d.opts.BasePort-10)
	}
	if d.processes > 1 {
		return d.checkNodes()
	}
	if _, err := os.Stat(filepath.Join(d.opts.Dir, "node1")); err == nil {
		return usagef("--data %s holds a cluster of nodes (dev without --processes 1): run it so", d.opts.Dir)
	}
	last := d.opts.BasePort + devControllers + d.opts.Groups*d.opts.Replicas - 1
	if d.opts.BasePort <= 10 || last > 65535 {
		return usagef("--base-port %d: the ports %d to %d must lie between 1 and 65535", d.opts.BasePort, d.opts.BasePort-10, last)
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
