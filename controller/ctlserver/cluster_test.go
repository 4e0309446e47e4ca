package ctlserver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/controller/ctlserver"
	"github.com/shardkv/shardkv/internal/memnet"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// cluster is a three-replica controller: raft over the in-memory network,
// clients over gRPC on loopback, one Pebble engine per replica.
type cluster struct {
	t      *testing.T
	net    *memnet.Network
	dir    string
	shards int
	addrs  []string
	peers  []uint64
	// clusterID, if set, is the cluster's id, and joins are checked (most
	// tests join groups that do not run, unchecked).
	clusterID uint64

	mu      sync.Mutex
	servers map[uint64]*ctlserver.Server
	grpcs   map[uint64]*grpc.Server
	engines map[uint64]*storage.Engine
}

func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("SHARDKV_SEED"); v != "" {
		s, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (rerun with SHARDKV_SEED=%d)", s, s)
	return s
}

func newCluster(t *testing.T, shards int) *cluster { return newClusterWith(t, shards, 0) }

// newClusterWith starts a cluster whose joins are checked when clusterID is
// not 0.
func newClusterWith(t *testing.T, shards int, clusterID uint64) *cluster {
	c := &cluster{t: t, net: memnet.New(seed(t)), dir: t.TempDir(), shards: shards, clusterID: clusterID,
		servers: map[uint64]*ctlserver.Server{}, grpcs: map[uint64]*grpc.Server{}, engines: map[uint64]*storage.Engine{}}
	for i := 1; i <= 3; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.addrs = append(c.addrs, l.Addr().String())
		l.Close()
		c.peers = append(c.peers, uint64(i))
	}
	for _, id := range c.peers {
		c.start(id)
	}
	t.Cleanup(func() {
		for _, id := range c.peers {
			c.crash(id)
		}
	})
	return c
}

func (c *cluster) start(id uint64) {
	c.t.Helper()
	e, err := storage.Open(filepath.Join(c.dir, fmt.Sprint(id)))
	if err != nil {
		c.t.Fatal(err)
	}
	s, err := ctlserver.Start(ctlserver.Config{
		ID: id, Peers: c.peers, Engine: e, Network: c.net, NumShards: c.shards,
		Logger: testLogger(), ClusterID: c.clusterID, UnsafeSkipJoinCheck: c.clusterID == 0,
		Tune: func(rc *raftnode.Config) { rc.SnapshotEntries = 20; rc.CatchUpEntries = 5 },
	})
	if err != nil {
		c.t.Fatal(err)
	}
	var l net.Listener
	for i := 0; ; i++ { // the port was just released; retry briefly if it lingers
		l, err = net.Listen("tcp", c.addrs[id-1])
		if err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	g := grpc.NewServer(rpc.ServerOptions()...)
	s.Register(g)
	go func() { _ = g.Serve(l) }()
	c.mu.Lock()
	c.servers[id], c.grpcs[id], c.engines[id] = s, g, e
	c.mu.Unlock()
}

func testLogger() *slog.Logger {
	if os.Getenv("SHARDKV_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (c *cluster) crash(id uint64) {
	c.mu.Lock()
	s, g, e := c.servers[id], c.grpcs[id], c.engines[id]
	delete(c.servers, id)
	c.mu.Unlock()
	if s == nil {
		return
	}
	g.Stop()
	s.Stop()
	e.Close()
}

func (c *cluster) leader() uint64 {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for id, s := range c.servers {
			if s.Node().Status().IsLeader {
				c.mu.Unlock()
				return id
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatal("no leader")
	return 0
}

func (c *cluster) client() *ctlclient.Client {
	cl, err := ctlclient.New(c.addrs)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// conn is a raw gRPC client of replica id (no leader following, no
// retries), for tests of what one replica answers.
func (c *cluster) conn(id uint64) controllerpb.ControllerClient {
	c.t.Helper()
	cc, err := grpc.NewClient(c.addrs[id-1], rpc.DialOptions()...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	return controllerpb.NewControllerClient(cc)
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func addrsOf(gids ...uint64) map[uint64][]string {
	m := map[uint64][]string{}
	for _, g := range gids {
		m[g] = []string{fmt.Sprintf("g%d-a", g), fmt.Sprintf("g%d-b", g), fmt.Sprintf("g%d-c", g)}
	}
	return m
}

// mustJoin joins groups gids (at addrsOf) and fails the test on an error.
func mustJoin(t *testing.T, cl *ctlclient.Client, gids ...uint64) {
	t.Helper()
	if _, err := cl.Join(ctx(t), addrsOf(gids...)); err != nil {
		t.Fatalf("join %v: %v", gids, err)
	}
}

// latest returns the latest configuration and fails the test on an error.
func latest(t *testing.T, cl *ctlclient.Client) controller.Config {
	t.Helper()
	cfg, _, err := cl.Query(ctx(t), -1)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// checkConfig asserts balance and that exactly groups hold shards.
func checkConfig(t *testing.T, cfg controller.Config, groups ...uint64) {
	t.Helper()
	if len(cfg.Groups) != len(groups) {
		t.Fatalf("config %d has groups %v, want %v", cfg.Num, cfg.GroupIDs(), groups)
	}
	count := map[uint64]int{}
	for s, g := range cfg.Shards {
		if _, ok := cfg.Groups[g]; !ok && len(groups) > 0 {
			t.Fatalf("config %d: shard %d on group %d, not in %v", cfg.Num, s, g, groups)
		}
		count[g]++
	}
	lo, hi := len(cfg.Shards), 0
	for _, g := range groups {
		lo, hi = min(lo, count[g]), max(hi, count[g])
	}
	if len(groups) > 0 && hi-lo > 1 {
		t.Fatalf("config %d unbalanced: %v", cfg.Num, count)
	}
}

func TestJoinLeaveQueryAndRestarts(t *testing.T) {
	c := newCluster(t, 10)
	cl := c.client()
	cx := ctx(t)

	cfg0, n, err := cl.Query(cx, 0)
	for errors.Is(err, controllerpb.ErrNotInitialized) {
		time.Sleep(20 * time.Millisecond)
		cfg0, n, err = cl.Query(cx, 0)
	}
	if err != nil || n != 10 || cfg0.Num != 0 || len(cfg0.Groups) != 0 {
		t.Fatalf("config 0: %+v, %d shards, %v", cfg0, n, err)
	}
	for _, g := range cfg0.Shards {
		if g != 0 {
			t.Fatal("config 0 assigns a shard")
		}
	}

	var history []controller.Config
	step := func(cfg controller.Config, err error, groups ...uint64) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		checkConfig(t, cfg, groups...)
		history = append(history, cfg)
	}
	cfg, err := cl.Join(cx, addrsOf(1))
	step(cfg, err, 1)
	cfg, err = cl.Join(cx, addrsOf(2, 3))
	step(cfg, err, 1, 2, 3)
	if got := cfg.Groups[2]; len(got) != 3 || got[0] != "g2-a" || got[2] != "g2-c" {
		t.Fatalf("addresses reordered: %v", got)
	}
	cfg, err = cl.Leave(cx, []uint64{2}, false)
	step(cfg, err, 1, 3)
	cfg, err = cl.Move(cx, 0, 3)
	if err != nil || cfg.Shards[0] != 3 {
		t.Fatalf("move: %v %v", cfg.Shards, err)
	}
	history = append(history, cfg)

	// Every replica restarts in turn; history never changes.
	for _, id := range c.peers {
		c.crash(id)
		c.start(id)
		c.leader()
		for _, want := range history {
			got, _, err := cl.Query(cx, int64(want.Num))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("after restarting %d, config %d is %v, was %v", id, want.Num, got, want)
			}
		}
	}
	// And all at once.
	for _, id := range c.peers {
		c.crash(id)
	}
	for _, id := range c.peers {
		c.start(id)
	}
	latest, _, err := cl.Query(cx, -1)
	if err != nil || fmt.Sprint(latest) != fmt.Sprint(history[len(history)-1]) {
		t.Fatalf("after full restart latest is %v (%v)", latest, err)
	}
}

func TestSameConfigAcrossLeaderCrash(t *testing.T) {
	c := newCluster(t, 16)
	cl := c.client()
	mustJoin(t, cl, 1, 2)
	before := latest(t, cl)
	old := c.leader()
	c.crash(old)
	if after := latest(t, cl); fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("latest changed across leader crash: %v -> %v", before, after)
	}
	c.start(old)
}

func TestMinimalMovesOnJoinAndLeave(t *testing.T) {
	const shards = 64
	c := newCluster(t, shards)
	cl := c.client()
	cx := ctx(t)
	prev, _, err := cl.Query(cx, -1)
	for errors.Is(err, controllerpb.ErrNotInitialized) {
		time.Sleep(20 * time.Millisecond)
		prev, _, err = cl.Query(cx, -1)
	}
	check := func(cfg controller.Config, changing uint64) {
		t.Helper()
		g := len(cfg.Groups)
		limit := (shards+g-1)/g + 1
		moved := 0
		for s := range cfg.Shards {
			if cfg.Shards[s] != prev.Shards[s] {
				moved++
				if prev.Shards[s] != changing && cfg.Shards[s] != changing && prev.Shards[s] != 0 {
					t.Fatalf("shard %d moved %d -> %d, not from/to group %d", s, prev.Shards[s], cfg.Shards[s], changing)
				}
			}
		}
		if prev.Shards[0] != 0 && moved > limit {
			t.Fatalf("%d shards moved, limit %d", moved, limit)
		}
		prev = cfg
	}
	for _, g := range []uint64{1, 2, 3} {
		cfg, err := cl.Join(cx, addrsOf(g))
		if err != nil {
			t.Fatal(err)
		}
		check(cfg, g)
	}
	cfg, err := cl.Leave(cx, []uint64{1}, false)
	if err != nil {
		t.Fatal(err)
	}
	check(cfg, 1)
	checkConfig(t, cfg, 2, 3)
}

func TestConcurrentClientsEndBalanced(t *testing.T) {
	c := newCluster(t, 64)
	cx := ctx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Go(func() {
			cl := c.client()
			base := uint64(i*3 + 1) // each client owns gids base..base+2: 30 at most at once
			for round := 0; round < 3; round++ {
				if _, err := cl.Join(cx, addrsOf(base, base+1, base+2)); err != nil {
					errs <- err
					return
				}
				if _, err := cl.Leave(cx, []uint64{base + uint64(round)}, false); err != nil {
					errs <- err
					return
				}
				if round < 2 {
					if _, err := cl.Leave(cx, []uint64{base, base + 1, base + 2}[:0], false); err != nil {
						errs <- err
						return
					}
				}
				if _, err := cl.Join(cx, addrsOf(base+uint64(round))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	cfg := latest(t, c.client())
	var all []uint64
	for g := uint64(1); g <= 30; g++ {
		all = append(all, g)
	}
	checkConfig(t, cfg, all...)
}

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	c := newCluster(t, 8)
	cl := c.client()
	cx := ctx(t)
	mustJoin(t, cl, 1, 2)
	before := latest(t, cl)
	cases := []struct {
		name string
		do   func() error
		want error
	}{
		{"leave unknown gid", func() error { _, err := cl.Leave(cx, []uint64{9}, false); return err }, controllerpb.ErrUnknownGroup},
		{"move shard out of range", func() error { _, err := cl.Move(cx, 8, 1); return err }, controllerpb.ErrUnknownShard},
		{"move to unknown gid", func() error { _, err := cl.Move(cx, 0, 9); return err }, controllerpb.ErrUnknownGroup},
		{"join existing gid with other addresses", func() error {
			_, err := cl.Join(cx, map[uint64][]string{1: {"elsewhere"}, 3: {"x"}})
			return err
		}, controllerpb.ErrGroupExists},
		{"join gid 0", func() error { _, err := cl.Join(cx, map[uint64][]string{0: {"x"}}); return err }, controllerpb.ErrInvalidGroup},
		{"leave all without force", func() error { _, err := cl.Leave(cx, []uint64{1, 2}, false); return err }, controllerpb.ErrWouldOrphan},
	}
	for _, tc := range cases {
		if err := tc.do(); !errors.Is(err, tc.want) {
			t.Fatalf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		if after := latest(t, cl); after.Num != before.Num {
			t.Fatalf("%s created configuration %d", tc.name, after.Num)
		}
	}
	cfg, err := cl.Leave(cx, []uint64{1, 2}, true)
	if err != nil || len(cfg.Groups) != 0 {
		t.Fatalf("forced leave-all: %v, %v", cfg, err)
	}
}

func TestWatchReturnsNewConfigurations(t *testing.T) {
	c := newCluster(t, 8)
	cl := c.client()
	cx := ctx(t)
	got := make(chan controller.Config, 1)
	go func() {
		cfg, err := cl.Watch(cx, 0)
		if err != nil {
			t.Error(err)
		}
		got <- cfg
	}()
	time.Sleep(200 * time.Millisecond)
	mustJoin(t, cl, 4)
	select {
	case cfg := <-got:
		if cfg.Num < 1 || cfg.Groups[4] == nil {
			t.Fatalf("watch returned %v", cfg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not return after a join")
	}
}

// TestWatchWithAShortDeadlineWaits: a long poll whose caller's deadline is
// shorter than the last confirmation's usual budget still waits for about
// half of it before answering "nothing new" (the latest configuration),
// rather than at once: a caller polling with such deadlines in a loop
// would otherwise send the group a read index as fast as it can.
func TestWatchWithAShortDeadlineWaits(t *testing.T) {
	c := newCluster(t, 8)
	cl := c.client()
	cx := ctx(t)
	mustJoin(t, cl, 4)
	latest := latest(t, cl)
	for range 3 {
		short, cancel := context.WithTimeout(cx, 600*time.Millisecond)
		start := time.Now()
		cfg, err := cl.Watch(short, latest.Num)
		took := time.Since(start)
		cancel()
		if err != nil || cfg.Num != latest.Num {
			t.Fatalf("watch with a 600 ms deadline: %v, %v; want nothing new (configuration %d)", cfg.Num, err, latest.Num)
		}
		if took < 100*time.Millisecond {
			t.Fatalf("watch with a 600 ms deadline answered after %v", took)
		}
	}
}
