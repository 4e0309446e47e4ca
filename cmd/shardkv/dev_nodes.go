package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// nodeAddrs are the addresses of dev's nodes (--processes above 1): the
// ports after the controller's.
func (d *devFlags) nodeAddrs() []string {
	var out []string
	for n := range d.processes {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", d.opts.BasePort+devControllers+n))
	}
	return out
}

// groupAddrs are group gid's replicas' addresses (its nodes'), by replica
// id.
func (d *devFlags) groupAddrs(gid uint64) []string {
	nodes := d.nodeAddrs()
	var out []string
	for id := uint64(1); id <= uint64(d.opts.Replicas); id++ {
		out = append(out, nodes[cluster.NodeOf(gid, id, d.processes)]) // distinct: replicas <= nodes is checked
	}
	return out
}

// checkNodes refuses what dev cannot run as nodes.
func (d *devFlags) checkNodes() error {
	if d.restore != "" {
		return usagef("--restore runs in one process: give --processes 1")
	}
	if d.opts.Replicas > d.processes {
		return usagef("--replicas %d on --processes %d would put two replicas of a group on one node (one node down would take both)", d.opts.Replicas, d.processes)
	}
	if d.opts.BasePort <= 10 || d.opts.BasePort+devControllers+d.processes-1 > 65535 {
		return usagef("--base-port %d: the ports %d to %d must lie between 1 and 65535", d.opts.BasePort, d.opts.BasePort-10, d.opts.BasePort+devControllers+d.processes-1)
	}
	if m, _ := filepath.Glob(filepath.Join(d.opts.Dir, "marker.manifest.*")); len(m) > 0 { // a Pebble engine
		return usagef("--data %s holds a cluster run in one process: run it with --processes 1", d.opts.Dir)
	}
	return nil
}

// nodePorts are every address dev's processes will listen on.
func (d *devFlags) nodePorts() []string {
	out := append(d.replicaAddrs()[:devControllers], d.nodeAddrs()...)
	out = append(out, d.http)
	for n := range d.processes {
		out = append(out, d.nodeHTTP(n))
	}
	return out
}

// child is a process dev started.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when it exited
	err  error
}

// runNodes runs the cluster as processes of this binary: the three
// controller replicas, then --processes nodes hosting the groups'
// replicas. It joins every group to a new cluster, announces it, and
// stops the nodes then the controllers (SIGTERM) when ctx ends; any
// process exiting on its own stops them all.
func (d *devFlags) runNodes(ctx context.Context, cmd *cobra.Command, g *globals, log *slog.Logger) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := storage.SecureDir(d.opts.Dir, log); err != nil {
		return err
	}
	var ctls []string
	for i := range devControllers {
		ctls = append(ctls, fmt.Sprintf("127.0.0.1:%d", d.opts.BasePort+i))
	}
	common, dial, err := d.childFlags(g, ctls)
	if err != nil {
		return err
	}
	kids := &children{exe: exe, common: common, exited: make(chan *child, devControllers+d.processes)}
	defer kids.stopAll()
	if err := kids.startAll(d.controllerArgs(ctls), d.nodeArgs(ctls)); err != nil {
		return err
	}
	if d.tls {
		forwardHangup(ctx, append(slices.Clone(kids.controllers), kids.nodes...))
	} else {
		hangupWithoutTLS(ctx, log)
	}
	began := time.Now()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	type joinResult struct {
		cfg config.Config
		err error
	}
	joined := make(chan joinResult, 1)
	go func() {
		cfg, err := d.joinNodes(startCtx, ctls, rpc.DialOptions(dial...))
		joined <- joinResult{cfg, err}
	}()
	var cfg config.Config
	select {
	case j := <-joined:
		if j.err != nil {
			return j.err
		}
		cfg = j.cfg
	case c := <-kids.exited:
		return c.exitError(" while the cluster started")
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "shardkv dev cluster up in %v, data in %s, %d nodes\n", time.Since(began).Round(time.Millisecond), d.opts.Dir, d.processes)
	d.printNodes(out, cfg, ctls, kids.nodes)
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "shutting down")
		return nil
	case c := <-kids.exited:
		return c.exitError("")
	}
}

// exitError is dev's error for c, a child that exited on its own (when, if
// not empty, says when, with a leading space): with c's storage exit code,
// dev's is the same (the disk cannot persist), and any other ends dev with
// exitFailed.
func (c *child) exitError(when string) error {
	err := fmt.Errorf("%s exited%s: %v", c.name, when, c.err)
	if c.cmd.ProcessState != nil && c.cmd.ProcessState.ExitCode() == exitStorage {
		return &exitError{code: exitStorage, err: fmt.Errorf("%w (its disk cannot persist; see its last line above)", err)}
	}
	return err
}

// childFlags are the flags every process dev starts takes (logging, and
// with --tls its certificates, written first), and the dial options of
// dev's own connections as a client (the join).
func (d *devFlags) childFlags(g *globals, ctls []string) (common []string, dial []grpc.DialOption, err error) {
	common = []string{"--log-format", g.logFormat, "--log-level", g.logLevel}
	if !d.tls {
		return common, nil, nil
	}
	peerMap := map[uint64]string{}
	for i, a := range ctls {
		peerMap[uint64(i+1)] = a
	}
	// The controllers derive the cluster id so (no --cluster-token): the
	// certificates must name it.
	if err := d.writeCerts(storage.ClusterIDFor(defaultClusterToken, peerMap)); err != nil {
		return nil, nil, err
	}
	f := d.serverTLS()
	// One throwaway CA signs every certificate: auth may be enabled all
	// the same (see --allow-shared-peer-ca).
	common = append(common, "--cert", f.Cert, "--key", f.Key, "--trusted-ca", f.TrustedCA, "--client-cert-auth", "--allow-shared-peer-ca")
	cfg, err := rpc.ClientTLS(d.certs.CAFile, d.certs.ClientCert, d.certs.ClientKey)
	if err != nil {
		return nil, nil, err
	}
	return common, []grpc.DialOption{rpc.WithTLS(cfg)}, nil
}

// controllerArgs are the command lines of the controller replicas, at ctls.
func (d *devFlags) controllerArgs(ctls []string) [][]string {
	var peers []string
	for i, a := range ctls {
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, a))
	}
	var out [][]string
	for i, a := range ctls {
		args := []string{"controller", "--id", fmt.Sprint(i + 1), "--listen", a,
			"--peers", strings.Join(peers, ","), "--shards", fmt.Sprint(d.opts.Shards), "--data", filepath.Join(d.opts.Dir, fmt.Sprintf("c%d", i+1))}
		if i == 0 {
			args = append(args, "--http", d.http) // the web console, where dev serves it in one process
		}
		out = append(out, args)
	}
	return out
}

// nodeArgs are the command lines of the nodes: each names, with
// --replica, every group it hosts a replica of and that group's members.
func (d *devFlags) nodeArgs(ctls []string) [][]string {
	var out [][]string
	for n, a := range d.nodeAddrs() {
		args := []string{"server", "--listen", a, "--controllers", strings.Join(ctls, ","),
			"--data", filepath.Join(d.opts.Dir, fmt.Sprintf("node%d", n+1)), "--http", d.nodeHTTP(n)}
		for gid := uint64(1); gid <= uint64(d.opts.Groups); gid++ {
			var members []string
			host := false
			for id, addr := range d.groupAddrs(gid) {
				members = append(members, fmt.Sprintf("%d=%s", id+1, addr))
				host = host || addr == a
			}
			if host {
				args = append(args, "--replica", fmt.Sprintf("%d:%s", gid, strings.Join(members, ",")))
			}
		}
		out = append(out, args)
	}
	return out
}

// printNodes announces the cluster dev started: its controllers, groups
// and nodes, and a first command to try.
func (d *devFlags) printNodes(out io.Writer, cfg config.Config, ctls []string, nodes []*child) {
	fmt.Fprintf(out, "  controller  %s\n", strings.Join(ctls, ","))
	fmt.Fprintf(out, "  console     http://%s/  (and the first controller's metrics)\n", d.http)
	for gid := uint64(1); gid <= uint64(d.opts.Groups); gid++ {
		addrs := strings.Join(d.groupAddrs(gid), ",")
		fmt.Fprintf(out, "  group %-4d  %s", gid, addrs)
		if _, ok := cfg.Groups[gid]; !ok {
			fmt.Fprintf(out, "  (not in configuration %d: shardkv admin join %d=%s adds it)", cfg.Num, gid, addrs)
		}
		fmt.Fprintln(out)
	}
	for n, a := range d.nodeAddrs() {
		fmt.Fprintf(out, "  node %-5d  %s  (pid %d, metrics http://%s/metrics)\n", n+1, a, nodes[n].cmd.Process.Pid, d.nodeHTTP(n))
	}
	flag := ""
	if c := strings.Join(ctls, ","); c != defaultControllers {
		flag = " --controllers " + c
	}
	flag += d.printTLS(out)
	fmt.Fprintf(out, "try: shardkv put hello world%s && shardkv get hello%s\n", flag, flag)
}

// children are the processes dev started: controllers first, then nodes.
// exited receives each as it exits.
type children struct {
	exe         string
	common      []string // flags every child takes
	controllers []*child
	nodes       []*child
	exited      chan *child
}

// startAll starts the controllers, then the nodes, with the command lines
// given; on an error, those started are left for stopAll.
func (k *children) startAll(controllers, nodes [][]string) error {
	for i, args := range controllers {
		c, err := k.start(fmt.Sprintf("controller %d", i+1), args)
		if err != nil {
			return err
		}
		k.controllers = append(k.controllers, c)
	}
	for n, args := range nodes {
		c, err := k.start(fmt.Sprintf("node %d", n+1), args)
		if err != nil {
			return err
		}
		k.nodes = append(k.nodes, c)
	}
	return nil
}

func (k *children) start(name string, args []string) (*child, error) {
	c := &child{name: name, cmd: exec.Command(k.exe, append(slices.Clone(args), k.common...)...), done: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = os.Stderr, os.Stderr
	dieWithDev(c.cmd)
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
		k.exited <- c
	}()
	return c, nil
}

// stopAll stops the nodes, then the controllers (SIGTERM), and waits for
// each to exit: groups first, as in one process.
func (k *children) stopAll() {
	for _, set := range [][]*child{k.nodes, k.controllers} {
		for _, c := range set {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range set {
			<-c.done
		}
	}
}

// nodeHTTP is node n's /metrics address: the ports after dev's own.
func (d *devFlags) nodeHTTP(n int) string {
	return fmt.Sprintf("127.0.0.1:%d", d.opts.BasePort-9+n)
}

// joinNodes joins every group to a new cluster (one whose controller has
// no configuration yet), retrying while the nodes start; a cluster that
// has one keeps it as its operators left it, and is only checked (as
// cluster.Start checks it). It returns the latest configuration.
func (d *devFlags) joinNodes(ctx context.Context, ctls []string, dial []grpc.DialOption) (config.Config, error) {
	cfg, err := d.joinNew(ctx, ctls, dial)
	if err != nil {
		return cfg, err
	}
	for gid := range cfg.Groups {
		if gid > uint64(d.opts.Groups) {
			return cfg, fmt.Errorf("%w: the cluster in %s has group %d, but only groups 1-%d were started; "+
				"start with --groups %d (and `shardkv admin leave` the extra groups before lowering it)",
				cluster.ErrGroupsMissing, d.opts.Dir, gid, d.opts.Groups, gid)
		}
	}
	return cfg, nil
}

// joinNew joins every group if the cluster is new, and returns the latest
// configuration. dial are the connections' options.
func (d *devFlags) joinNew(ctx context.Context, ctls []string, dial []grpc.DialOption) (config.Config, error) {
	ctl, err := ctlclient.New(ctls, dial...)
	if err != nil {
		return config.Config{}, err
	}
	defer ctl.Close()
	groups := map[uint64][]string{}
	for gid := uint64(1); gid <= uint64(d.opts.Groups); gid++ {
		groups[gid] = d.groupAddrs(gid)
	}
	// Wait for the nodes to serve: a join is checked with every replica.
	for _, a := range d.nodeAddrs() {
		if _, err := transport.Identify(ctx, a, 0, dial...); err != nil {
			return config.Config{}, fmt.Errorf("node %s did not start: %w", a, err)
		}
	}
	b := rpc.NewBackoff(100*time.Millisecond, time.Second)
	for {
		cfg, _, err := ctl.Query(ctx, -1)
		if err == nil && cfg.Num > 0 {
			return cfg, nil
		}
		if err == nil {
			if cfg, err = ctl.Join(ctx, groups); err == nil {
				return cfg, nil
			}
		}
		if werr := rpc.Wait(ctx, b); werr != nil {
			return config.Config{}, fmt.Errorf("join the groups: %w", errors.Join(werr, err))
		}
	}
}

// forwardHangup passes every SIGHUP dev gets to its processes until ctx
// ends: with --tls it makes them read their certificate files again.
func forwardHangup(ctx context.Context, children []*child) {
	onHangup(ctx, func() {
		for _, c := range children {
			_ = c.cmd.Process.Signal(syscall.SIGHUP)
		}
	})
}
