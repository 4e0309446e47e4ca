package nemesis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/rpc"
)

// RunOptions describe one scenario run.
type RunOptions struct {
	Binary   string
	Dir      string // kept by the caller when the run fails
	Scenario Scenario
	Seed     uint64
	Duration time.Duration // of the faults, with clients running (default 12s)
	Clients  int           // default 12
	Logf     func(format string, args ...any)
	TLS      bool // mutual TLS on every connection (Options.TLS)
	Nodes    bool // the groups' replicas on three nodes (Options.Nodes)
}

// ErrNoNetfilter: the scenario makes real partitions, which need root and
// iptables.
var ErrNoNetfilter = errors.New("nemesis: real partitions need root and iptables")

// ErrNodes: a group's replica is not lost or added alone on nodes
// (Options.Nodes): a whole node is lost (Cluster.LoseNode) and its
// replicas replaced on a new node (Cluster.NewNode, Cluster.HostAdded).
var ErrNodes = errors.New("nemesis: on nodes a whole node is lost and replaced, not one replica")

// healBudget is how soon after healing every key must be readable again.
const healBudget = 10 * time.Second

// Run starts a fresh cluster, runs clients under the scenario's faults,
// heals, reads every key, and checks the history, the duplicate appends
// and the replicas' agreement. It returns a summary.
func Run(ctx context.Context, o RunOptions) (string, error) {
	o.Duration = cmp.Or(o.Duration, 12*time.Second)
	o.Clients = cmp.Or(o.Clients, 12)
	o.Duration = max(o.Duration, o.Scenario.MinDuration)
	start := time.Now()
	logf := func(format string, args ...any) {
		o.Logf("[%6.2fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	logf("scenario %s, seed %d, TLS %v, nodes %v, dir %s", o.Scenario.Name, o.Seed, o.TLS, o.Nodes, o.Dir)
	if o.Scenario.Netfilter && !NetfilterAvailable() {
		return "", ErrNoNetfilter
	}
	c, err := Start(ctx, Options{Binary: o.Binary, Dir: o.Dir, Seed: o.Seed, Netfilter: o.Scenario.Netfilter, TLS: o.TLS, Nodes: o.Nodes})
	if err != nil {
		return "", err
	}
	defer c.Close()
	if o.Nodes {
		logf("nodes: %s", strings.Join(c.NodeNames(), ", "))
	}
	ctl, err := ctlclient.New(c.Addrs(0), c.Dial()...)
	if err != nil {
		return "", err
	}
	defer ctl.Close()

	w := Workload{Dial: c.Dial()}
	wctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	var wg sync.WaitGroup
	var werr error
	var wend time.Time // when the clients stopped
	wg.Add(1)
	go func() {
		defer wg.Done()
		werr = w.Run(wctx, func() []string { return c.Addrs(0) }, o.Clients, o.Seed)
		wend = time.Now()
	}()
	env := &Env{C: c, Rng: rand.New(rand.NewPCG(o.Seed, 1)), Ctl: ctl, Logf: logf}
	_ = rpc.Sleep(wctx, time.Second) // let the clients start
	faultsFrom := time.Now()
	o.Scenario.Run(wctx, env)
	wg.Wait()
	if werr != nil {
		return "", fmt.Errorf("clients: %w", werr)
	}
	if err := env.Failed(); err != nil {
		return "", fmt.Errorf("scenario %s: %w", o.Scenario.Name, err)
	}
	// A scenario may outlive the clients (finishing a membership change it
	// started): windows end with the clients.
	avail := w.Availability(faultsFrom, wend, env.Heals())
	logf("%s", avail)
	logf("heal everything")
	if err := c.Heal(); err != nil {
		return "", err
	}
	if err := w.FinalRead(ctx, c.Addrs(0), healBudget); err != nil {
		return "", err
	}
	logf("final reads done; checking %d operations", w.Rec.Len())
	if err := w.Rec.Check(filepath.Join(o.Dir, "porcupine"), 2*time.Minute); err != nil {
		return "", err
	}
	if err := c.CheckReplicasAgree(ctx); err != nil {
		return "", err
	}
	if err := c.CheckMembership(ctx); err != nil {
		return "", err
	}
	if err := c.CheckNoCrash(); err != nil {
		return "", err
	}
	for _, d := range avail.HealToServed {
		if d > HealBudget {
			return "", fmt.Errorf("a group was not served within %v of a heal (%s)", HealBudget, avail)
		}
	}
	return fmt.Sprintf("%s: linearizable; %s; replicas and memberships agree; %s", o.Scenario.Name, w.Stats(), avail), nil
}
