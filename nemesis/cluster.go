// Package nemesis tests the real shardkv binary under faults: a cluster of
// separate processes (3 controller replicas, groups of 3) whose every link
// runs through a faultproxy, concurrent clients whose history is checked
// with porcupine, and scenarios that kill, freeze, partition, degrade and
// reconfigure while the clients run.
//
// Run it with `go test ./nemesis` (CI-sized, part of `make test`) or
// `make soak SOAK=30m` (scenarios repeated with fresh seeds). Every run
// prints its seed and its schedule of faults; a failed run keeps its
// directory (porcupine's HTML view, process logs, data directories) and
// prints where it is.
package nemesis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/faultproxy"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/storage"
)

// Replica names a process: group 0 is the controller.
type Replica = storage.Replica

// Options describe a cluster of processes.
type Options struct {
	Binary          string // the shardkv binary
	Dir             string // run directory: data and logs
	Groups          int    // replica groups, all joined at start (default 3)
	Shards          int    // default 12
	SnapshotEntries uint64 // raft compaction threshold (default 200, so snapshots happen)
	Seed            uint64
	// Netfilter runs every replica as its own user, so that real
	// partitions (DropLink, DropClients, Silence) can be made; needs root
	// and iptables (see NetfilterAvailable).
	Netfilter bool
}

type proc struct {
	r       Replica
	listen  string
	inbound *faultproxy.Proxy // clients and other groups reach the replica here
	args    []string
	cmd     *exec.Cmd
	exited  chan struct{}
	paused  bool
}

// Cluster is a running cluster of shardkv processes behind proxies.
type Cluster struct {
	opts  Options
	mu    sync.Mutex
	procs map[Replica]*proc
	links map[[2]Replica]*faultproxy.Proxy // raft traffic from [0] to [1]
	rules [][]string                       // netfilter rules in force
	pool  *rpc.Pool                        // to ask replicas directly
}

// Start launches the cluster and joins every group.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Groups == 0 {
		opts.Groups = 3
	}
	if opts.Shards == 0 {
		opts.Shards = 12
	}
	if opts.SnapshotEntries == 0 {
		opts.SnapshotEntries = 200
	}
	c := &Cluster{opts: opts, procs: map[Replica]*proc{}, links: map[[2]Replica]*faultproxy.Proxy{}, pool: rpc.NewPool()}
	if err := c.start(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// start prepares the directories and proxies, launches every process and
// joins the groups.
func (c *Cluster) start(ctx context.Context) error {
	if c.opts.Netfilter {
		if err := c.shareDir(); err != nil {
			return err
		}
	}
	var all []Replica
	for g := 0; g <= c.opts.Groups; g++ {
		for id := 1; id <= 3; id++ {
			all = append(all, Replica{Group: uint64(g), ID: uint64(id)})
		}
	}
	seed, err := c.startProxies(all)
	if err != nil {
		return err
	}
	clusterID := seed<<1 | 1 // any id, the same for every controller replica
	for _, r := range all {
		if err := c.prepare(r, clusterID); err != nil {
			return err
		}
		if err := c.launch(c.procs[r]); err != nil {
			return err
		}
	}
	return c.joinGroups(ctx)
}

// shareDir lets the processes, which run as other users, reach the binary
// and their data.
func (c *Cluster) shareDir() error {
	bin := filepath.Join(c.opts.Dir, "shardkv")
	if err := copyExecutable(c.opts.Binary, bin); err != nil {
		return err
	}
	c.opts.Binary = bin
	for _, d := range []string{c.opts.Dir, filepath.Join(c.opts.Dir, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// startProxies puts a fault proxy in front of every process (for clients)
// and on every raft link between two replicas of a group. It returns the
// last seed it gave a proxy.
func (c *Cluster) startProxies(all []Replica) (seed uint64, err error) {
	seed = c.opts.Seed
	for _, r := range all {
		addr, err := cluster.FreeAddr()
		if err != nil {
			return 0, err
		}
		seed++
		in, err := faultproxy.Listen("127.0.0.1:0", addr, seed)
		if err != nil {
			return 0, err
		}
		c.procs[r] = &proc{r: r, listen: addr, inbound: in}
	}
	for _, a := range all {
		for _, b := range all {
			if a.Group == b.Group && a.ID != b.ID {
				seed++
				p, err := faultproxy.Listen("127.0.0.1:0", c.procs[b].listen, seed)
				if err != nil {
					return 0, err
				}
				c.links[[2]Replica{a, b}] = p
			}
		}
	}
	return seed, nil
}

// prepare sets r's command line and data directory.
func (c *Cluster) prepare(r Replica, clusterID uint64) error {
	p := c.procs[r]
	var peers []string
	for id := uint64(1); id <= 3; id++ {
		addr := p.listen
		if id != r.ID {
			addr = c.links[[2]Replica{r, {Group: r.Group, ID: id}}].Addr()
		}
		peers = append(peers, fmt.Sprintf("%d=%s", id, addr))
	}
	data := filepath.Join(c.opts.Dir, "data", strings.ReplaceAll(r.String(), "/", "-"))
	if c.opts.Netfilter {
		if err := os.MkdirAll(data, 0o755); err != nil {
			return err
		}
		if err := os.Chown(data, int(uidOf(r)), int(uidOf(r))); err != nil {
			return err
		}
	}
	common := []string{"--id", fmt.Sprint(r.ID), "--listen", p.listen, "--peers", strings.Join(peers, ","),
		"--data", data, "--snapshot-entries", fmt.Sprint(c.opts.SnapshotEntries), "--log-level", logLevel()}
	if r.Group == 0 {
		// Each replica sees its peers at its own proxies' addresses, so
		// the id cannot be derived from --peers: state it.
		p.args = append([]string{"controller", "--shards", fmt.Sprint(c.opts.Shards),
			"--cluster-id", fmt.Sprintf("%x", clusterID)}, common...)
	} else {
		p.args = append([]string{"server", "--group", fmt.Sprint(r.Group), "--controllers", strings.Join(c.Addrs(0), ",")}, common...)
	}
	return nil
}

// joinGroups joins every group in one configuration change.
func (c *Cluster) joinGroups(ctx context.Context) error {
	ctl, err := ctlclient.New(c.Addrs(0))
	if err != nil {
		return err
	}
	defer ctl.Close()
	groups := map[uint64][]string{}
	for g := 1; g <= c.opts.Groups; g++ {
		groups[uint64(g)] = c.Addrs(uint64(g))
	}
	jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		// The controller checks every replica of a join: wait for the
		// processes to serve.
		_, err := ctl.Join(jctx, groups)
		if err == nil {
			break
		}
		if !errors.Is(err, controllerpb.ErrReplicaUnreachable) || rpc.Sleep(jctx, 200*time.Millisecond) != nil {
			return fmt.Errorf("join groups: %w", err)
		}
	}
	return nil
}

func (c *Cluster) launch(p *proc) error {
	logPath := filepath.Join(c.opts.Dir, "logs", strings.ReplaceAll(p.r.String(), "/", "-")+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(c.opts.Binary, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if c.opts.Netfilter {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uidOf(p.r), Gid: uidOf(p.r)}}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.r, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited, p.paused = cmd, exited, false
	return nil
}

// Addrs are the client-facing (proxied) addresses of a group's replicas;
// group 0 is the controller.
func (c *Cluster) Addrs(g uint64) []string {
	var out []string
	for id := uint64(1); id <= 3; id++ {
		out = append(out, c.procs[Replica{Group: g, ID: id}].inbound.Addr())
	}
	return out
}

// Replicas lists every process.
func (c *Cluster) Replicas() []Replica {
	var out []Replica
	for g := 0; g <= c.opts.Groups; g++ {
		for id := 1; id <= 3; id++ {
			out = append(out, Replica{Group: uint64(g), ID: uint64(id)})
		}
	}
	return out
}

// Groups is the number of replica groups.
func (c *Cluster) Groups() int { return c.opts.Groups }

// Kill sends SIGKILL to a replica and waits for it to die.
func (c *Cluster) Kill(r Replica) {
	c.mu.Lock()
	p := c.procs[r]
	c.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a frozen process must be able to die
	_ = p.cmd.Process.Kill()
	<-p.exited
	c.mu.Lock()
	p.cmd = nil
	c.mu.Unlock()
}

// Restart starts a killed replica again on its data.
func (c *Cluster) Restart(r Replica) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[r]
	if p.cmd != nil {
		return nil
	}
	return c.launch(p)
}

// Pause freezes a replica with SIGSTOP; Resume thaws it.
func (c *Cluster) Pause(r Replica) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[r]; p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		p.paused = true
	}
}

// Resume sends SIGCONT to a paused replica.
func (c *Cluster) Resume(r Replica) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[r]; p.cmd != nil && p.paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		p.paused = false
	}
}

// Link is the proxy carrying raft traffic from one replica to another of
// its group.
func (c *Cluster) Link(from, to Replica) *faultproxy.Proxy { return c.links[[2]Replica{from, to}] }

// Inbound is the proxy in front of a replica's client-facing address.
func (c *Cluster) Inbound(r Replica) *faultproxy.Proxy { return c.procs[r].inbound }

// Degrade applies f to every link to and from r, its inbound proxy
// included.
func (c *Cluster) Degrade(r Replica, f faultproxy.Faults) {
	for k, p := range c.links {
		if k[0] == r || k[1] == r {
			p.Set(f)
		}
	}
	c.procs[r].inbound.Set(f)
}

// Isolate cuts r off from everybody.
func (c *Cluster) Isolate(r Replica) { c.Degrade(r, faultproxy.Faults{Blackhole: true}) }

// Heal removes every network fault, thaws paused replicas and restarts
// killed ones.
func (c *Cluster) Heal() error {
	for _, p := range c.links {
		p.Heal()
	}
	errs := []error{c.clearRules()}
	for _, r := range c.Replicas() {
		c.procs[r].inbound.Heal()
		c.Resume(r)
		errs = append(errs, c.Restart(r))
	}
	return errors.Join(errs...)
}

// Close kills every process and closes every proxy.
func (c *Cluster) Close() {
	for _, r := range c.Replicas() {
		if p := c.procs[r]; p != nil {
			c.Kill(r)
			if p.inbound != nil {
				p.inbound.Close()
			}
		}
	}
	for _, p := range c.links {
		p.Close()
	}
	_ = c.clearRules()
	_ = c.pool.Close()
}

func copyExecutable(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// status asks a replica directly (not through its proxy).
func (c *Cluster) status(ctx context.Context, r Replica) (*kvpb.StatusReply, error) {
	conn, err := c.pool.Get(c.procs[r].listen)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	// A pooled connection to a restarted process may be between
	// reconnection attempts: wait for it within the deadline.
	return kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{Digests: true}, grpc.WaitForReady(true))
}

// Leader returns the replica that leads group g (the controller for 0), as
// the replicas themselves report it.
func (c *Cluster) Leader(ctx context.Context, g uint64) (Replica, bool) {
	for id := uint64(1); id <= 3; id++ {
		r := Replica{Group: g, ID: id}
		if g == 0 {
			conn, err := c.pool.Get(c.procs[r].listen)
			if err != nil {
				continue
			}
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = controllerpb.NewControllerClient(conn).Query(qctx, &controllerpb.QueryRequest{Num: -1}, grpc.WaitForReady(true))
			cancel()
			if err == nil {
				return r, true
			}
			continue
		}
		if st, err := c.status(ctx, r); err == nil && st.GetLeader() == st.GetReplica() {
			return r, true
		}
	}
	return Replica{}, false
}

// CatchUp waits until replica r has applied what leader had applied when
// called, and returns how long that took (ok false after limit).
func (c *Cluster) CatchUp(ctx context.Context, r, leader Replica, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	st, err := c.status(ctx, leader)
	if err != nil {
		return 0, false
	}
	target := st.GetApplied()
	for time.Since(start) < limit && ctx.Err() == nil {
		if st, err := c.status(ctx, r); err == nil && st.GetApplied() >= target {
			return time.Since(start), true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, false
}

// CheckReplicasAgree waits until the replicas of every group report the
// same applied index and configuration, then compares their per-shard
// digests.
func (c *Cluster) CheckReplicasAgree(ctx context.Context) error {
	for g := uint64(1); g <= uint64(c.opts.Groups); g++ {
		var last string
		deadline := time.Now().Add(30 * time.Second)
		for {
			var replies []*kvpb.StatusReply
			for id := uint64(1); id <= 3; id++ {
				st, err := c.status(ctx, Replica{Group: g, ID: id})
				if err != nil {
					last = fmt.Sprintf("group %d replica %d: %v", g, id, err)
					break
				}
				replies = append(replies, st)
			}
			if len(replies) == 3 {
				a, b, d := replies[0], replies[1], replies[2]
				if a.GetDigestApplied() == b.GetDigestApplied() && b.GetDigestApplied() == d.GetDigestApplied() {
					da, db, dd := digests(a), digests(b), digests(d)
					if da != db || db != dd {
						return fmt.Errorf("group %d: replicas at applied index %d differ:\n  %s\n  %s\n  %s", g, a.GetDigestApplied(), da, db, dd)
					}
					break
				}
				last = fmt.Sprintf("group %d applied %d/%d/%d", g, a.GetDigestApplied(), b.GetDigestApplied(), d.GetDigestApplied())
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("replicas never reached the same applied index: %s", last)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func digests(st *kvpb.StatusReply) string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %d:", st.GetConfigNum())
	for _, s := range st.GetShards() {
		fmt.Fprintf(&b, " %d=%s/%x", s.GetShard(), s.GetState(), s.GetDigest())
	}
	return b.String()
}

// logLevel is the replicas' log level: info, or NEMESIS_LOG_LEVEL.
func logLevel() string {
	if l := os.Getenv("NEMESIS_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}
