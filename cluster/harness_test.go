package cluster_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/internal/memnet"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
)

func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SHARDKV_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with SHARDKV_SEED=%d)", seed, seed)
	return seed
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("SHARDKV_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

type harness struct {
	t    *testing.T
	c    *cluster.Cluster
	net  *memnet.Network
	ctx  context.Context
	seed uint64
	dir  string // kept when the test fails
}

// start runs an in-process cluster: raft over the in-memory network
// (over gRPC between the replicas' servers when opts.TLS is set, so that
// raft goes through TLS too), every replica on its own engine.
func start(t *testing.T, opts cluster.Options) *harness {
	t.Helper()
	seed := testSeed(t)
	net := memnet.New(seed)
	dir, err := os.MkdirTemp("", "shardkv-"+strings.ReplaceAll(t.Name(), "/", "_")+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept data directories in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	opts.Dir = filepath.Join(dir, "data")
	if opts.TLS == nil {
		opts.RaftNetwork = net
	}
	opts.EnginePerReplica = true
	opts.Logger = cmp.Or(opts.Logger, testLogger())
	if opts.Shards == 0 {
		opts.Shards = 10
	}
	tune := opts.TuneRaft
	opts.TuneRaft = func(c *raftnode.Config) {
		c.SnapshotEntries, c.CatchUpEntries = 200, 50
		if tune != nil {
			tune(c)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); net.Wait() })
	return &harness{t: t, c: c, net: net, ctx: ctx, seed: seed, dir: dir}
}

// startOneGroup starts a cluster of one group and joins it: every shard
// is served by group 1.
func startOneGroup(t *testing.T) *harness {
	t.Helper()
	h := start(t, cluster.Options{Groups: 1})
	h.join(1)
	return h
}

// lossy is a gRPC client interceptor that loses a fraction of requests
// and of replies and delays the rest, as an unreliable network would. A
// lost reply means the server may have acted: exactly what retries must
// survive.
func lossy(seed uint64, loss float64, maxDelay time.Duration) grpc.DialOption {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 77))
	roll := func() (bool, time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64() < loss, time.Duration(rng.Int64N(int64(maxDelay) + 1))
	}
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		lost, d := roll()
		time.Sleep(d)
		if lost {
			return status.Error(codes.Unavailable, "injected request loss")
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if lost, _ := roll(); lost && err == nil {
			return status.Error(codes.Unavailable, "injected reply loss")
		}
		return err
	})
}

func (h *harness) client(opts ...client.Option) *client.Client {
	h.t.Helper()
	cl, err := client.New(h.ctx, h.c.ControllerAddrs(), opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cl.Close() })
	return cl
}

// controller returns a client of the controller's replicas; the caller
// closes it.
func (h *harness) controller() *ctlclient.Client {
	h.t.Helper()
	cl, err := h.c.ControllerClient()
	if err != nil {
		h.t.Fatal(err)
	}
	return cl
}

func (h *harness) join(gids ...uint64) {
	h.t.Helper()
	cl := h.controller()
	defer cl.Close()
	groups := map[uint64][]string{}
	for _, g := range gids {
		groups[g] = h.c.GroupAddrs(g)
	}
	// The controller's leader asks every replica to identify itself within
	// a second at most (ctlserver.JoinCheckLimit, or half of the request's
	// time left); a loaded machine can miss that on a first dial. Its
	// refusal changes nothing, so try again (as nemesis's cluster does),
	// for 30 s after the first refusal.
	var deadline time.Time
	for {
		_, err := cl.Join(h.ctx, groups)
		if err == nil {
			return
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(30 * time.Second)
		}
		if !errors.Is(err, controllerpb.ErrReplicaUnreachable) || time.Now().After(deadline) || rpc.Sleep(h.ctx, 200*time.Millisecond) != nil {
			h.t.Fatal(err)
		}
		h.t.Logf("join %v: %v; trying again", gids, err)
	}
}

func (h *harness) leave(gids ...uint64) {
	h.t.Helper()
	cl := h.controller()
	defer cl.Close()
	if _, err := cl.Leave(h.ctx, gids, false); err != nil {
		h.t.Fatal(err)
	}
}

// must runs op with a 30 s timeout and fails the test with what and the
// error if it returns one.
func (h *harness) must(what string, op func(ctx context.Context) error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	if err := op(ctx); err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
}

func (h *harness) put(cl *client.Client, k, v string) {
	h.t.Helper()
	h.write("put", cl.Put, k, v)
}

func (h *harness) appendTo(cl *client.Client, k, v string) {
	h.t.Helper()
	h.write("append", cl.Append, k, v)
}

// write does one unconditional write (cl.Put or cl.Append) under must.
func (h *harness) write(op string, w func(context.Context, []byte, []byte, ...client.WriteOption) (client.WriteResult, error), k, v string) {
	h.t.Helper()
	h.must(op+" "+k, func(ctx context.Context) error {
		_, err := w(ctx, []byte(k), []byte(v))
		return err
	})
}

// check reads k and fails the test unless it holds want ("" for absent).
func (h *harness) check(cl *client.Client, k, want string) {
	h.t.Helper()
	var got client.GetResult
	h.must("get "+k, func(ctx context.Context) (err error) {
		got, err = cl.Get(ctx, []byte(k))
		return err
	})
	if !got.Found && want != "" || string(got.Value) != want {
		h.t.Fatalf("get %s = %q (found %v), want %q", k, got.Value, got.Found, want)
	}
}

// latest returns the controller's latest configuration.
func (h *harness) latest() controller.Config {
	h.t.Helper()
	cl := h.controller()
	defer cl.Close()
	cfg, _, err := cl.Query(h.ctx, -1)
	if err != nil {
		h.t.Fatal(err)
	}
	return cfg
}

// startGroup starts every replica of group gid again.
func (h *harness) startGroup(gid uint64) {
	h.t.Helper()
	if err := h.c.StartGroup(gid); err != nil {
		h.t.Fatalf("start group %d: %v", gid, err)
	}
}

func keys(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, fmt.Sprintf("key-%d", i))
	}
	return out
}

// waitSettled waits until every running group has installed the
// controller's latest configuration and finished its migrations. Only a
// leader's view counts (a follower may lag), so every group of the latest
// configuration must show a leader: one that has none cannot prove it
// finished, and is not settled. A group outside it is checked when it
// shows a leader (it may still hold shards to hand over).
func (h *harness) waitSettled() {
	h.t.Helper()
	latest := h.latest()
	deadline := time.Now().Add(60 * time.Second)
	for {
		settled, why := true, ""
		led := map[uint64]bool{}
		for _, r := range h.c.Replicas() {
			s := h.c.Group(r)
			if s == nil || !s.Node().Status().IsLeader {
				continue
			}
			led[r.Group] = true
			v := s.StateMachine().View()
			if v.Config.Num != latest.Num {
				settled, why = false, fmt.Sprintf("group %d at configuration %d, latest %d", r.Group, v.Config.Num, latest.Num)
			}
			for shard, sh := range v.Shards {
				if sh.State != group.Serving && sh.State != group.Absent {
					settled, why = false, fmt.Sprintf("group %d shard %d %v", r.Group, shard, sh.State)
				}
			}
		}
		for gid := range latest.Groups {
			if !led[gid] {
				settled, why = false, fmt.Sprintf("group %d (in configuration %d) shows no leader", gid, latest.Num)
			}
		}
		if settled {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("not settled after 60s: %s", why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// appenders are clients appending unique tokens to a few keys until
// stopped (see startAppenders).
type appenders struct {
	h       *harness
	mu      sync.Mutex
	acked   map[string][]string
	unknown []string
	wg      sync.WaitGroup
	stop    chan struct{}
}

// startAppenders starts n clients appending tokens "[client.i]" to keys
// k0..k<keys-1>, each append with its own timeout.
func (h *harness) startAppenders(n, keys int, timeout time.Duration, opts ...client.Option) *appenders {
	a := &appenders{h: h, acked: map[string][]string{}, stop: make(chan struct{})}
	for c := 0; c < n; c++ {
		a.wg.Go(func() {
			cl := h.client(opts...)
			for i := 0; ; i++ {
				select {
				case <-a.stop:
					return
				default:
				}
				key := fmt.Sprintf("k%d", (c+i)%keys)
				tok := fmt.Sprintf("[%d.%d]", c, i)
				ctx, cancel := context.WithTimeout(h.ctx, timeout)
				_, err := cl.Append(ctx, []byte(key), []byte(tok))
				cancel()
				a.mu.Lock()
				if err == nil {
					a.acked[key] = append(a.acked[key], tok)
				} else {
					a.unknown = append(a.unknown, tok)
				}
				a.mu.Unlock()
			}
		})
	}
	return a
}

// stopAndCheck stops the appenders and checks every key: each acknowledged
// append applied exactly once, each other one at most once.
func (a *appenders) stopAndCheck() {
	t := a.h.t
	t.Helper()
	close(a.stop)
	a.wg.Wait()
	cl := a.h.client()
	total := 0
	keys := map[string]bool{}
	for key := range a.acked {
		keys[key] = true
	}
	for key := range keys {
		ctx, cancel := context.WithTimeout(a.h.ctx, 30*time.Second)
		got, err := cl.Get(ctx, []byte(key))
		v := got.Value
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range a.acked[key] {
			if n := strings.Count(string(v), tok); n != 1 {
				t.Fatalf("%s: acknowledged %s applied %d times", key, tok, n)
			}
		}
		for _, tok := range a.unknown {
			if n := strings.Count(string(v), tok); n > 1 {
				t.Fatalf("%s: %s applied %d times", key, tok, n)
			}
		}
		total += len(a.acked[key])
	}
	t.Logf("%d acknowledged appends, %d unknown", total, len(a.unknown))
	if total == 0 {
		t.Fatal("no append succeeded")
	}
}
