// Package nemesis tests the real shardkv binary under faults: a cluster of
// separate processes (3 controller replicas, groups of 3) whose every link
// runs through a faultproxy, concurrent clients whose history is checked
// with porcupine, and scenarios that kill, freeze, partition, degrade and
// reconfigure while the clients run.
//
// The groups' replicas run one process each, or on nodes (Options.Nodes,
// TestNemesisNodes): three `shardkv server` processes, each hosting one
// replica of every group, as `shardkv dev` places them. A fault then acts
// on a process: killing, freezing, restarting, isolating or degrading the
// node of a replica takes down or cuts off one replica of every group
// (never two of one), and a link fault between two nodes cuts the raft
// traffic of every group between them, which shares one stream.
//
// Run it with `go test ./nemesis` (CI-sized, part of `make test`) or
// `make soak SOAK=30m` (scenarios repeated with fresh seeds). Every run
// prints its seed and its schedule of faults; a failed run keeps its
// directory (porcupine's HTML view, process logs, data directories) and
// prints where it is.
package nemesis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/devcert"
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
	// TLS runs every connection with mutual TLS: a throwaway CA and
	// certificates under Dir/tls (devcert), every replica started with
	// --cert, --key, --trusted-ca and --client-cert-auth, and the test's
	// clients with a client certificate (Dial).
	TLS bool
	// Nodes runs the groups' replicas on three nodes, `shardkv server
	// --replica GROUP:ID=ADDR,... --replica ...` processes each hosting
	// one replica of every group, replica i of group g on node (g+i-2)
	// mod 3 (cluster.NodeOf, as `shardkv dev` places them), so a group's
	// replicas are on distinct nodes; the controller stays three
	// processes. Every method taking a Replica then acts on its process,
	// its node: Kill, Pause, Restart, Isolate and Degrade act on one
	// replica of every group. A node has one inbound proxy, and the raft
	// traffic from one node to another runs through one link proxy (every
	// pair of their replicas' Link is it, and the transport sends every
	// group's messages to a peer address in one stream), so a link fault
	// cuts every group's traffic between the two. A group's replica is
	// not lost or added alone (Lose, NewReplica: ErrNodes): a whole node
	// is (LoseNode), and replaced by a new node (NewNode, HostAdded); the
	// controller's replicas are lost and added as without nodes.
	Nodes bool
}

// nodes is the number of nodes with Options.Nodes: one per replica of a
// group.
const nodes = 3

// proc is a process: a controller replica, a group's replica, or a node
// hosting one replica of every group (Options.Nodes).
type proc struct {
	name    string    // its log's and data directory's name
	uid     uint32    // the user it runs as with Options.Netfilter
	node    bool      // a node: started with --replica
	hosts   []Replica // the replicas it hosts: one but for a node
	listen  string
	inbound *faultproxy.Proxy // clients and other groups reach the process here
	data    string
	args    []string
	cmd     *exec.Cmd
	exited  chan struct{}
	paused  bool
	lost    bool // killed and its data deleted for good: never restarted
	// direct: a new node (NewNode), which its peers and clients reach at
	// its own address, not its inbound proxy.
	direct bool
}

// Cluster is a running cluster of shardkv processes behind proxies.
type Cluster struct {
	opts  Options
	mu    sync.Mutex
	procs map[Replica]*proc // with Options.Nodes, the replicas a node hosts share its proc
	// members are the ids of each group's replicas in service (sorted):
	// 1, 2, 3 at start; a lost replica leaves at once, a replica added by
	// a membership change joins when its process starts (see
	// membership.go).
	members   map[uint64][]uint64
	links     map[[2]Replica]*faultproxy.Proxy // raft traffic from [0] to [1] (from [0]'s process to [1]'s)
	rules     [][]string                       // netfilter rules in force
	pool      *rpc.Pool                        // to ask replicas directly
	dial      []grpc.DialOption                // the clients' (Dial)
	certs     *devcert.Local                   // with Options.TLS
	clusterID uint64
	seed      uint64 // the last seed given to a proxy
	// newNodes are the nodes NewNode started, hosting what HostAdded put
	// on them; reserved, the replica ids ReserveOnNode gave out for them.
	newNodes []*proc
	reserved map[Replica]bool
}

// Start launches the cluster and joins every group.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	opts.Groups = cmp.Or(opts.Groups, 3)
	opts.Shards = cmp.Or(opts.Shards, 12)
	opts.SnapshotEntries = cmp.Or(opts.SnapshotEntries, 200)
	c := &Cluster{opts: opts, procs: map[Replica]*proc{}, members: map[uint64][]uint64{}, reserved: map[Replica]bool{},
		links: map[[2]Replica]*faultproxy.Proxy{}, pool: rpc.NewPool(), dial: rpc.DialOptions()}
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
		c.members[uint64(g)] = []uint64{1, 2, 3}
		for id := 1; id <= 3; id++ {
			all = append(all, Replica{Group: uint64(g), ID: uint64(id)})
		}
	}
	seed, err := c.startProxies(all)
	if err != nil {
		return err
	}
	c.seed = seed
	c.clusterID = seed<<1 | 1 // any id, the same for every controller replica
	if c.opts.TLS {
		if err := c.makeCerts(); err != nil {
			return err
		}
		_ = c.pool.Close() // unused yet: the replicas now want the client certificate
		c.pool = rpc.NewPool(c.dial...)
	}
	for _, p := range c.processes(all) {
		if err := c.prepare(p); err != nil {
			return err
		}
		if err := c.launch(p); err != nil {
			return err
		}
	}
	return c.joinGroups(ctx)
}

// processes are the processes hosting replicas rs, each once, in order.
func (c *Cluster) processes(rs []Replica) []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*proc
	for _, r := range rs {
		if p := c.procs[r]; p != nil && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// newProc makes the process that hosts r, with no address yet: its
// node's with Options.Nodes (but for a controller replica), else r's own.
func (c *Cluster) newProc(r Replica) *proc {
	if c.opts.Nodes && r.Group != 0 {
		n := cluster.NodeOf(r.Group, r.ID, nodes)
		return &proc{name: fmt.Sprintf("node%d", n+1), uid: nodeUID(n), node: true, hosts: []Replica{r}}
	}
	return &proc{name: strings.ReplaceAll(r.String(), "/", "-"), uid: uidOf(r), hosts: []Replica{r}}
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

// startProxies makes the processes hosting the replicas all, puts a fault
// proxy in front of every process (for clients) and one on every raft link
// between two processes hosting replicas of a group (with Options.Nodes,
// one per pair of nodes for every group). It returns the last seed it gave
// a proxy.
func (c *Cluster) startProxies(all []Replica) (seed uint64, err error) {
	seed = c.opts.Seed
	byName := map[string]*proc{}
	for _, r := range all {
		p := c.newProc(r)
		if q := byName[p.name]; q != nil {
			q.hosts = append(q.hosts, r)
			c.procs[r] = q
			continue
		}
		if p.listen, err = cluster.FreeAddr(); err != nil {
			return 0, err
		}
		seed++
		if p.inbound, err = faultproxy.Listen("127.0.0.1:0", p.listen, seed); err != nil {
			return 0, err
		}
		byName[p.name], c.procs[r] = p, p
	}
	shared := map[[2]*proc]*faultproxy.Proxy{}
	for _, a := range all {
		for _, b := range all {
			if a.Group == b.Group && a.ID != b.ID {
				k := [2]*proc{c.procs[a], c.procs[b]}
				if shared[k] == nil {
					seed++
					if shared[k], err = faultproxy.Listen("127.0.0.1:0", k[1].listen, seed); err != nil {
						return 0, err
					}
				}
				c.links[[2]Replica{a, b}] = shared[k]
			}
		}
	}
	return seed, nil
}

// prepare sets a founding process's command line and data directory: each
// replica it hosts sees itself at the process's address and its peers at
// the link proxies from this process to theirs.
func (c *Cluster) prepare(p *proc) error {
	var peers [][]string
	for _, r := range p.hosts {
		var list []string
		for id := uint64(1); id <= 3; id++ {
			addr := p.listen
			if id != r.ID {
				addr = c.links[[2]Replica{r, {Group: r.Group, ID: id}}].Addr()
			}
			list = append(list, fmt.Sprintf("%d=%s", id, addr))
		}
		peers = append(peers, list)
	}
	return c.setArgs(p, peers)
}

// setArgs makes p's data directory and sets its command line: peers[i]
// are the members (id=address) of the group of the replica p.hosts[i]
// (see prepare and StartAdded).
func (c *Cluster) setArgs(p *proc, peers [][]string, extra ...string) error {
	p.data = filepath.Join(c.opts.Dir, "data", p.name)
	if c.opts.Netfilter {
		if err := os.MkdirAll(p.data, 0o755); err != nil {
			return err
		}
		if err := os.Chown(p.data, int(p.uid), int(p.uid)); err != nil {
			return err
		}
	}
	common := append([]string{"--listen", p.listen, "--data", p.data, "--snapshot-entries", fmt.Sprint(c.opts.SnapshotEntries),
		"--log-level", logLevel()}, extra...)
	if c.certs != nil {
		common = append(common, "--cert", c.certs.NodeCert, "--key", c.certs.NodeKey, "--trusted-ca", c.certs.CAFile, "--client-cert-auth")
	}
	switch {
	case p.node:
		p.args = []string{"server", "--controllers", strings.Join(c.Addrs(0), ",")}
		for i, r := range p.hosts {
			p.args = append(p.args, "--replica", fmt.Sprintf("%d:%s", r.Group, strings.Join(peers[i], ",")))
		}
	case p.hosts[0].Group == 0:
		// Each replica sees its peers at its own proxies' addresses, so
		// the id cannot be derived from --peers: state it.
		p.args = []string{"controller", "--shards", fmt.Sprint(c.opts.Shards), "--cluster-id", fmt.Sprintf("%x", c.clusterID)}
	default:
		p.args = []string{"server", "--group", fmt.Sprint(p.hosts[0].Group), "--controllers", strings.Join(c.Addrs(0), ",")}
	}
	if !p.node {
		p.args = append(p.args, "--id", fmt.Sprint(p.hosts[0].ID), "--peers", strings.Join(peers[0], ","))
	}
	p.args = append(p.args, common...)
	return nil
}

// makeCerts makes the cluster's CA and certificates (Options.TLS) and the
// clients' dial options. With Netfilter the replicas run as other users:
// the files are made readable to them (they are throwaway).
func (c *Cluster) makeCerts() error {
	dir := filepath.Join(c.opts.Dir, "tls")
	certs, err := devcert.WriteLocal(dir, rpc.PeerURI(c.clusterID))
	if err != nil {
		return err
	}
	if c.opts.Netfilter {
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		for _, f := range []string{certs.CAFile, certs.NodeCert, certs.NodeKey} {
			if err := os.Chmod(f, 0o644); err != nil {
				return err
			}
		}
	}
	cfg, err := rpc.ClientTLS(certs.CAFile, certs.ClientCert, certs.ClientKey)
	if err != nil {
		return err
	}
	c.certs, c.dial = certs, rpc.DialOptions(rpc.WithTLS(cfg))
	return nil
}

// Dial are the dial options of a client of the cluster (with its client
// certificate when Options.TLS).
func (c *Cluster) Dial() []grpc.DialOption { return c.dial }

// joinGroups joins every group in one configuration change.
func (c *Cluster) joinGroups(ctx context.Context) error {
	ctl, err := ctlclient.New(c.Addrs(0), c.Dial()...)
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

func (c *Cluster) logPath(p *proc) string {
	return filepath.Join(c.opts.Dir, "logs", p.name+".log")
}

// goCrash matches the first line of a Go panic or fatal error.
var goCrash = regexp.MustCompile(`(?m)^(panic|fatal error): `)

// CheckNoCrash fails if any process the cluster ran crashed (a Go panic or
// fatal error in its log): the nemesis kills, pauses and cuts processes
// off, and a majority carries a group through a crash, so nothing else
// would show one.
func (c *Cluster) CheckNoCrash() error {
	logs, err := filepath.Glob(filepath.Join(c.opts.Dir, "logs", "*.log"))
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			return err
		}
		if loc := goCrash.FindIndex(b); loc != nil {
			b = b[loc[0]:]
			errs = append(errs, fmt.Errorf("%s crashed:\n%s", l, b[:min(len(b), 3000)]))
		}
	}
	return errors.Join(errs...)
}

func (c *Cluster) launch(p *proc) error {
	logPath := c.logPath(p)
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
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if c.opts.Netfilter {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: p.uid, Gid: p.uid}
	}
	dieWithTest(cmd.SysProcAttr)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	p.cmd, p.exited, p.paused = cmd, exited, false
	return nil
}

// Addrs are the client-facing (proxied) addresses of a group's replicas
// in service; group 0 is the controller.
func (c *Cluster) Addrs(g uint64) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range c.members[g] {
		p := c.procs[Replica{Group: g, ID: id}]
		if p.direct {
			out = append(out, p.listen)
			continue
		}
		out = append(out, p.inbound.Addr())
	}
	return out
}

// ids returns the ids of group g's replicas in service.
func (c *Cluster) ids(g uint64) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members[g])
}

// Replicas lists every replica in service (running, or killed to be
// restarted), by group.
func (c *Cluster) Replicas() []Replica {
	var out []Replica
	for g := 0; g <= c.opts.Groups; g++ {
		for _, id := range c.ids(uint64(g)) {
			out = append(out, Replica{Group: uint64(g), ID: id})
		}
	}
	return out
}

// Groups is the number of replica groups.
func (c *Cluster) Groups() int { return c.opts.Groups }

// Nodes reports whether the groups' replicas run on nodes (Options.Nodes).
func (c *Cluster) Nodes() bool { return c.opts.Nodes }

// String names a process: its replica, or a node and the replicas it
// hosts.
func (p *proc) String() string {
	if !p.node {
		return p.hosts[0].String()
	}
	var rs []string
	for _, r := range p.hosts {
		rs = append(rs, r.String())
	}
	return fmt.Sprintf("%s (%s)", p.name, strings.Join(rs, " "))
}

// NodeNames names the nodes and the replicas each hosts (Options.Nodes).
func (c *Cluster) NodeNames() []string {
	var out []string
	for _, p := range c.processes(c.Replicas()) {
		if p.node {
			out = append(out, p.String())
		}
	}
	return out
}

// Process names the process hosting r: r itself, or with Options.Nodes its
// node and every replica that node hosts (what a fault on r acts on).
func (c *Cluster) Process(r Replica) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[r]; p != nil {
		return p.String()
	}
	return r.String()
}

// Kill sends SIGKILL to a replica's process (with Options.Nodes its node)
// and waits for it to die.
func (c *Cluster) Kill(r Replica) {
	c.mu.Lock()
	p := c.procs[r]
	c.mu.Unlock()
	c.kill(p)
}

func (c *Cluster) kill(p *proc) {
	c.mu.Lock()
	running := p != nil && p.cmd != nil
	c.mu.Unlock()
	if !running {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a frozen process must be able to die
	_ = p.cmd.Process.Kill()
	<-p.exited
	c.mu.Lock()
	p.cmd = nil
	c.mu.Unlock()
}

// Restart starts a killed replica's process again on its data (not a lost
// replica's).
func (c *Cluster) Restart(r Replica) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[r]
	if p == nil || p.cmd != nil || p.lost {
		return nil
	}
	return c.launch(p)
}

// Pause freezes a replica's process with SIGSTOP; Resume thaws it.
func (c *Cluster) Pause(r Replica) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[r]; p != nil && p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		p.paused = true
	}
}

// Resume sends SIGCONT to a paused replica.
func (c *Cluster) Resume(r Replica) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[r]; p != nil && p.cmd != nil && p.paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		p.paused = false
	}
}

// Link is the proxy carrying raft traffic from one replica to another of
// its group (nil for traffic to a replica added by a membership change:
// its peers reach it at its inbound proxy).
func (c *Cluster) Link(from, to Replica) *faultproxy.Proxy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.links[[2]Replica{from, to}]
}

// Inbound is the proxy in front of a replica's client-facing address.
func (c *Cluster) Inbound(r Replica) *faultproxy.Proxy {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[r].inbound
}

// proxies returns the link proxies whose key matches, and the inbound
// proxies of the replicas that match (nil: none, every one: all), each
// once (with Options.Nodes, replicas share their node's).
func (c *Cluster) proxies(link func(k [2]Replica) bool, inbound func(r Replica) bool) []*faultproxy.Proxy {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*faultproxy.Proxy
	add := func(p *faultproxy.Proxy) {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	for k, p := range c.links {
		if link(k) {
			add(p)
		}
	}
	for r, p := range c.procs {
		if inbound != nil && inbound(r) {
			add(p.inbound)
		}
	}
	return out
}

// Degrade applies f to every link to and from r, its inbound proxy
// included (which is also how its peers reach a replica added by a
// membership change). With Options.Nodes these are its node's: every
// group's traffic to and from the node.
func (c *Cluster) Degrade(r Replica, f faultproxy.Faults) {
	for _, p := range c.proxies(func(k [2]Replica) bool { return k[0] == r || k[1] == r }, func(q Replica) bool { return q == r }) {
		p.Set(f)
	}
}

// Isolate cuts r (with Options.Nodes, its node) off from everybody.
func (c *Cluster) Isolate(r Replica) { c.Degrade(r, faultproxy.Faults{Blackhole: true}) }

// Heal removes every network fault, thaws paused replicas and restarts
// killed ones.
func (c *Cluster) Heal() error {
	errs := []error{c.healNetwork()}
	for _, r := range c.Replicas() {
		c.Resume(r)
		errs = append(errs, c.Restart(r))
	}
	return errors.Join(errs...)
}

// healNetwork removes every network fault: netfilter rules and proxy
// faults.
func (c *Cluster) healNetwork() error {
	err := c.clearRules()
	all := func(Replica) bool { return true }
	for _, p := range c.proxies(func([2]Replica) bool { return true }, all) {
		p.Heal()
	}
	return err
}

// Close kills every process and closes every proxy.
func (c *Cluster) Close() {
	c.mu.Lock()
	var rs []Replica
	for r := range c.procs {
		rs = append(rs, r)
	}
	newNodes := slices.Clone(c.newNodes)
	c.mu.Unlock()
	for _, r := range rs {
		c.Kill(r) // a node's second replica: already dead
	}
	for _, p := range newNodes {
		c.kill(p) // hosting nothing yet: in no c.procs entry
	}
	for _, p := range c.proxies(func([2]Replica) bool { return true }, func(Replica) bool { return true }) {
		if p != nil {
			p.Close()
		}
	}
	for _, p := range newNodes {
		p.inbound.Close()
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

// listenAddr is the address replica r listens on (no proxy).
func (c *Cluster) listenAddr(r Replica) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[r]; p != nil {
		return p.listen
	}
	return ""
}

// status asks a replica directly (not through its proxy).
func (c *Cluster) status(ctx context.Context, r Replica) (*kvpb.StatusReply, error) {
	conn, err := c.pool.Get(c.listenAddr(r))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	// A pooled connection to a restarted process may be between
	// reconnection attempts: wait for it within the deadline.
	return kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{Digests: true, Group: r.Group}, grpc.WaitForReady(true))
}

// Leader returns the replica that leads group g (the controller for 0), as
// the replicas themselves report it.
func (c *Cluster) Leader(ctx context.Context, g uint64) (Replica, bool) {
	for _, id := range c.ids(g) {
		r := Replica{Group: g, ID: id}
		if g == 0 {
			conn, err := c.pool.Get(c.listenAddr(r))
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

// CheckReplicasAgree waits until the replicas in service of every group
// report the same applied index and configuration, then compares their
// per-shard digests.
func (c *Cluster) CheckReplicasAgree(ctx context.Context) error {
	for g := uint64(1); g <= uint64(c.opts.Groups); g++ {
		var last string
		deadline := time.Now().Add(30 * time.Second)
		for {
			ids := c.ids(g)
			var replies []*kvpb.StatusReply
			for _, id := range ids {
				st, err := c.status(ctx, Replica{Group: g, ID: id})
				if err != nil {
					last = fmt.Sprintf("group %d replica %d: %v", g, id, err)
					break
				}
				replies = append(replies, st)
			}
			if len(replies) == len(ids) && len(ids) > 0 {
				same, differ := true, false
				var applied, ds []string
				for _, st := range replies {
					same = same && st.GetDigestApplied() == replies[0].GetDigestApplied()
					differ = differ || digests(st) != digests(replies[0])
					applied = append(applied, fmt.Sprint(st.GetDigestApplied()))
					ds = append(ds, fmt.Sprintf("replica %d: %s", st.GetReplica(), digests(st)))
				}
				if same && differ {
					return fmt.Errorf("group %d: replicas at applied index %d differ:\n  %s", g, replies[0].GetDigestApplied(), strings.Join(ds, "\n  "))
				}
				if same {
					break
				}
				last = fmt.Sprintf("group %d (replicas %v) applied %s", g, ids, strings.Join(applied, "/"))
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
