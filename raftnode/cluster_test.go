package raftnode_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/memnet"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

const testGroup = 7

// cluster is a Raft group of real nodes on real Pebble engines (one per
// member, as if each were its own process) over an in-memory network.
type cluster struct {
	t       *testing.T
	net     *memnet.Network
	dir     string
	peers   []uint64
	tune    func(*raftnode.Config)
	mu      sync.Mutex
	nodes   map[uint64]*raftnode.Node
	sms     map[uint64]*registers
	engines map[uint64]*storage.Engine
	joining map[uint64]bool // members added to the running group (Config.Join)
	forced  map[uint64]bool // members started with Config.ForceNewCluster
}

func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SHARDKV_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SHARDKV_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with SHARDKV_SEED=%d)", seed, seed)
	return seed
}

func newCluster(t *testing.T, size int, tune func(*raftnode.Config)) *cluster {
	t.Helper()
	c := &cluster{
		t:       t,
		net:     memnet.New(testSeed(t)),
		dir:     t.TempDir(),
		tune:    tune,
		nodes:   map[uint64]*raftnode.Node{},
		sms:     map[uint64]*registers{},
		engines: map[uint64]*storage.Engine{},
		joining: map[uint64]bool{},
		forced:  map[uint64]bool{},
	}
	for i := 1; i <= size; i++ {
		c.peers = append(c.peers, uint64(i))
	}
	for _, id := range c.peers {
		c.start(id)
	}
	t.Cleanup(c.shutdown)
	return c
}

func (c *cluster) logger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("SHARDKV_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// openMember opens the engine in dir/<id> and, on it, the registers of
// member id of testGroup.
func openMember(tb testing.TB, dir string, id uint64) (*storage.Engine, *registers) {
	tb.Helper()
	e, err := storage.Open(filepath.Join(dir, fmt.Sprint(id)))
	if err != nil {
		tb.Fatal(err)
	}
	sm, err := openRegisters(e, storage.Replica{Group: testGroup, ID: id})
	if err != nil {
		_ = e.Close()
		tb.Fatal(err)
	}
	return e, sm
}

// start opens (or reopens) member id from its directory.
func (c *cluster) start(id uint64) {
	c.t.Helper()
	e, sm := openMember(c.t, c.dir, id)
	peers := map[uint64]string{}
	for _, p := range c.peers {
		peers[p] = fmt.Sprintf("127.0.0.1:%d", 9000+p)
	}
	state := storage.ClusterNew
	if c.joining[id] {
		state = storage.ClusterJoin
	}
	// As `shardkv server` does: Join only at the first start, before the
	// identity is stored; later starts learn it from the identity.
	_, stored, err := e.LoadIdentity(storage.Replica{Group: testGroup, ID: id})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := e.EnsureIdentity(storage.Replica{Group: testGroup, ID: id}, storage.Identity{ClusterID: 1, Peers: peers}, state); err != nil {
		c.t.Fatal(err)
	}
	cfg := raftnode.Config{
		Group: testGroup, ID: id, Peers: c.peers,
		Engine: e, Network: c.net, StateMachine: sm, Logger: c.logger(), Join: c.joining[id] && !stored, ForceNewCluster: c.forced[id],
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	n, err := raftnode.Start(cfg)
	if err != nil {
		_ = e.Close()
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.nodes[id], c.sms[id], c.engines[id] = n, sm, e
	c.mu.Unlock()
}

// crash stops member id and closes its engine, losing nothing but what
// was never synced.
func (c *cluster) crash(id uint64) {
	c.mu.Lock()
	n, e := c.nodes[id], c.engines[id]
	delete(c.nodes, id)
	delete(c.sms, id)
	delete(c.engines, id)
	c.mu.Unlock()
	if n == nil {
		return
	}
	n.Stop()
	if err := e.Close(); err != nil {
		c.t.Errorf("close engine %d: %v", id, err)
	}
}

// crashFollower crashes a member other than the leader and returns it.
func (c *cluster) crashFollower() uint64 {
	c.t.Helper()
	lead := c.leader()
	f := c.peers[0]
	if f == lead {
		f = c.peers[1]
	}
	c.crash(f)
	return f
}

func (c *cluster) shutdown() {
	for _, id := range c.peers {
		c.crash(id)
	}
	c.net.Wait()
}

func (c *cluster) node(id uint64) *raftnode.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

func (c *cluster) sm(id uint64) *registers {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sms[id]
}

// leader waits for exactly one running member to claim leadership and
// returns it.
func (c *cluster) leader() uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var leaders []uint64
		c.mu.Lock()
		for id, n := range c.nodes {
			if n.Status().IsLeader {
				leaders = append(leaders, id)
			}
		}
		c.mu.Unlock()
		if len(leaders) == 1 {
			return leaders[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("no single leader within 10s")
	return 0
}

// followedLeader is leader, once every member also knows it as its leader:
// a member elected has not yet told the others (they learn it from its
// first append or heartbeat), and until then a member refuses proposals
// at once (no leader known).
func (c *cluster) followedLeader() uint64 {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		lead := c.leader() // again: an election may have followed
		followed := true
		c.mu.Lock()
		for _, n := range c.nodes {
			followed = followed && n.Status().Leader == lead
		}
		c.mu.Unlock()
		if followed {
			return lead
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("not every member follows one leader within 10s")
	return 0
}

// propose sends cmd to whoever leads among members (all running members if
// nil), retrying definite failures until the deadline. It returns the result,
// or an error if the outcome stayed unknown or the deadline passed.
func (c *cluster) propose(ctx context.Context, cmd []byte, members ...uint64) (any, error) {
	for {
		var target *raftnode.Node
		c.mu.Lock()
		for id, n := range c.nodes {
			if len(members) > 0 && !contains(members, id) {
				continue
			}
			if n.Status().IsLeader {
				target = n
			}
		}
		c.mu.Unlock()
		if target != nil {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			v, err := target.Propose(pctx, cmd)
			cancel()
			switch {
			case err == nil:
				return v, nil
			case rpcerr.CertainlyNotApplied(err):
				// definitely not applied: retry
			default:
				return nil, err // outcome unknown
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// isolateUntilLeaderless cuts member id off and waits until it knows no
// leader (its election timeout passed).
func (c *cluster) isolateUntilLeaderless(id uint64) {
	c.t.Helper()
	c.net.Isolate(testGroup, id)
	deadline := time.Now().Add(10 * time.Second)
	for c.node(id).Status().Leader != 0 {
		if time.Now().After(deadline) {
			c.t.Fatal("an isolated member kept believing in its leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func contains(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// waitConverged waits until every running member has applied the same
// index and holds want for each key.
func (c *cluster) waitConverged(want map[string]string) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		last = ""
		c.mu.Lock()
		for id, sm := range c.sms {
			for k, v := range want {
				if got, _ := sm.get(k); got != v {
					last = fmt.Sprintf("member %d: key %q = %q, want %q", id, k, got, v)
				}
			}
		}
		c.mu.Unlock()
		if last == "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("not converged: %s", last)
}
