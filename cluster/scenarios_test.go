package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/internal/linearizability"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// ownerOf returns the group owning key in the controller's latest
// configuration.
func (h *harness) ownerOf(cl *client.Client, key string) uint64 {
	cfg := cl.Config()
	return cfg.Shards[controller.ShardOf([]byte(key), len(cfg.Shards))]
}

// tryGet reads k, for up to 20 s if it must be served and for 2 s if it
// must not be (a key that is not served shows only as a timeout).
func (h *harness) tryGet(cl *client.Client, k string, mustServe bool) ([]byte, error) {
	wait := 20 * time.Second
	if !mustServe {
		wait = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(h.ctx, wait)
	defer cancel()
	got, err := cl.Get(ctx, []byte(k))
	return got.Value, err
}

func TestStaticShards(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3})
	h.join(1, 2, 3)
	cl := h.client()
	ks := keys(30)
	for _, k := range ks {
		h.put(cl, k, "v-"+k)
	}
	h.c.StopGroup(1)
	served, blocked := 0, 0
	for _, k := range ks {
		dead := h.ownerOf(cl, k) == 1
		v, err := h.tryGet(cl, k, !dead)
		if dead {
			if err == nil {
				t.Fatalf("key %s of the dead group was served", k)
			}
			blocked++
			continue
		}
		if err != nil || string(v) != "v-"+k {
			t.Fatalf("key %s of a live group: %q, %v", k, v, err)
		}
		served++
	}
	if served == 0 || blocked == 0 {
		t.Fatalf("degenerate placement: %d served, %d blocked", served, blocked)
	}
	h.startGroup(1)
	for _, k := range ks {
		h.check(cl, k, "v-"+k)
	}
}

// TestGroupAnswersByItsOwnConfiguration asks a group directly, bypassing
// the client's routing, for keys it does not own.
func TestGroupAnswersByItsOwnConfiguration(t *testing.T) {
	h := start(t, cluster.Options{Groups: 2})
	h.join(1, 2)
	cl := h.client()
	ks := keys(20)
	for _, k := range ks {
		h.put(cl, k, "x")
	}
	h.waitSettled()
	for gid := uint64(1); gid <= 2; gid++ {
		conns := map[string]kvpb.KVClient{}
		for _, a := range h.c.GroupAddrs(gid) {
			conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conns[a] = kvpb.NewKVClient(conn)
		}
		for _, k := range ks {
			if h.ownerOf(cl, k) == gid {
				continue
			}
			for a, kv := range conns {
				ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
				_, gerr := kv.Get(ctx, &kvpb.GetRequest{Key: []byte(k)})
				_, werr := kv.Write(ctx, &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte(k), Value: []byte("y"), ClientId: 99, Seq: 1})
				cancel()
				for _, err := range []error{gerr, werr} {
					err = kvpb.Errors.FromStatus(err)
					if !errors.Is(err, kvpb.ErrWrongGroup) && !errors.Is(err, rpcerr.ErrNotLeader) {
						t.Fatalf("group %d replica %s for a foreign key: %v", gid, a, err)
					}
				}
			}
		}
	}
	for _, k := range ks {
		h.check(cl, k, "x")
	}
}

func TestSnapshotsAndFullRestart(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3, TuneRaft: func(c *raftnode.Config) { c.SnapshotEntries, c.CatchUpEntries = 10, 2 }})
	h.join(1)
	cl := h.client()
	ks := keys(20)
	want := map[string]string{}
	for round, gids := range [][]uint64{{2}, {3}, {1}} {
		for _, k := range ks {
			v := fmt.Sprintf("%d.", round)
			h.appendTo(cl, k, v)
			want[k] += v
		}
		if round == 2 {
			h.leave(gids...)
		} else {
			h.join(gids...)
		}
	}
	// Restart everything, the controller too, mid-migration perhaps.
	for _, r := range h.c.Replicas() {
		h.c.StopReplica(r)
	}
	for _, r := range h.c.Replicas() {
		if err := h.c.StartReplica(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range ks {
		h.check(cl, k, want[k])
	}
	// The duplicate tables survived: replaying an applied write is a no-op.
	conn, err := grpc.NewClient(h.c.GroupAddrs(2)[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h.join(1)
	h.waitSettled()
	k := ks[0]
	owner := h.ownerOf(cl, k)
	before := want[k]
	replay := &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_APPEND, Key: []byte(k), Value: []byte("once"), ClientId: 4242, Seq: 1}
	open := &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_OPEN_SESSION, Key: []byte(k), ClientId: 4242}
	send := func(replay *kvpb.WriteRequest) {
		for {
			for _, a := range h.c.GroupAddrs(owner) {
				c, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
				_, err = kvpb.NewKVClient(c).Write(ctx, replay)
				cancel()
				c.Close()
				if err == nil {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	send(open)
	send(replay)
	for _, r := range h.c.Replicas() {
		h.c.StopReplica(r)
	}
	for _, r := range h.c.Replicas() {
		if err := h.c.StartReplica(r); err != nil {
			t.Fatal(err)
		}
	}
	send(replay)
	h.check(cl, k, before+"once")
}

func TestReplicasCatchUpAfterMissingChanges(t *testing.T) {
	// Groups 2 and 3 join with a replica down, which the controller's
	// check of a join refuses: not what this test is about.
	h := start(t, cluster.Options{Groups: 3, TuneRaft: func(c *raftnode.Config) { c.SnapshotEntries, c.CatchUpEntries = 10, 2 },
		UnsafeSkipJoinCheck: true})
	h.join(1)
	cl := h.client()
	for g := uint64(1); g <= 3; g++ {
		h.c.StopReplica(cluster.Replica{Group: g, ID: 3})
	}
	ks := keys(15)
	want := map[string]string{}
	for i, change := range []func(){func() { h.join(2) }, func() { h.join(3) }, func() { h.leave(1) }, func() { h.join(1) }} {
		for _, k := range ks {
			v := fmt.Sprint(i, ".")
			h.appendTo(cl, k, v)
			want[k] += v
		}
		change()
	}
	h.waitSettled()
	for g := uint64(1); g <= 3; g++ {
		if err := h.c.StartReplica(cluster.Replica{Group: g, ID: 3}); err != nil {
			t.Fatal(err)
		}
	}
	// Each returning replica reaches its leader's configuration and data.
	deadline := time.Now().Add(60 * time.Second)
	for g := uint64(1); g <= 3; g++ {
		var lead *groupserver.Server
		for id := uint64(1); id <= 2; id++ {
			if s := h.c.Group(cluster.Replica{Group: g, ID: id}); s != nil && s.Node().Status().IsLeader {
				lead = s
			}
		}
		back := h.c.Group(cluster.Replica{Group: g, ID: 3})
		for lead == nil || back.StateMachine().Applied() < lead.StateMachine().Applied() ||
			back.StateMachine().View().Config.Num != lead.StateMachine().View().Config.Num {
			if time.Now().After(deadline) {
				t.Fatalf("replica 3 of group %d did not catch up", g)
			}
			time.Sleep(20 * time.Millisecond)
			for id := uint64(1); id <= 3; id++ {
				if s := h.c.Group(cluster.Replica{Group: g, ID: id}); s != nil && s.Node().Status().IsLeader {
					lead = s
				}
			}
		}
		for _, k := range ks {
			v, version, err := back.StateMachine().Get([]byte(k))
			if errors.Is(err, kvpb.ErrWrongGroup) {
				continue
			}
			if err != nil || version == 0 || string(v) != want[k] {
				t.Fatalf("caught-up replica of group %d: %s = %q (%v), want %q", g, k, v, err, want[k])
			}
		}
	}
}

// TestConcurrentAppendsDuringChurn appends unique tokens from 10 clients
// while groups join, leave, and crash and restart whole, and checks every
// acknowledged append is applied exactly once.
func TestConcurrentAppendsDuringChurn(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3})
	h.join(1)
	rng := rand.New(rand.NewPCG(h.seed, 3))
	apps := h.startAppenders(10, 5, 20*time.Second)
	for step := 0; step < 6; step++ {
		time.Sleep(300 * time.Millisecond)
		switch step {
		case 0:
			h.join(2)
		case 1:
			h.join(3)
		case 2:
			victim := uint64(rng.IntN(3) + 1)
			h.c.StopGroup(victim) // a whole group crashes mid-migration
			time.Sleep(300 * time.Millisecond)
			h.startGroup(victim)
		case 3:
			h.leave(2)
		case 4:
			h.c.StopGroup(1)
			h.join(2)
			h.startGroup(1)
		case 5:
			h.leave(3)
		}
	}
	time.Sleep(500 * time.Millisecond)
	apps.stopAndCheck()
}

// TestLinearizableUnderLossAndReconfiguration runs 10 clients with mixed
// operations through 10% request and 10% reply loss and delays, while
// groups join and leave, and checks the history with porcupine.
func TestLinearizableUnderLossAndReconfiguration(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3})
	loss := lossy(h.seed, 0.1, 5*time.Millisecond)
	h.join(1)
	h.checkLinearizable(10, func() {
		for _, change := range []func(){func() { h.join(2) }, func() { h.join(3) }, func() { h.leave(1) }, func() { h.join(1) }, func() { h.leave(2) }} {
			time.Sleep(400 * time.Millisecond)
			change()
		}
		time.Sleep(500 * time.Millisecond)
	}, client.WithDialOptions(rpc.DialOptions(loss)...), client.WithAttemptTimeout(500*time.Millisecond))
}

// checkLinearizable runs n clients of mixed gets, puts, appends and
// conditional writes (a put if the version is the one last seen, an
// append if the value is) on four keys while during runs, then checks the
// history, versions included, with porcupine.
func (h *harness) checkLinearizable(n int, during func(), opts ...client.Option) {
	t := h.t
	t.Helper()
	var rec linearizability.Recorder
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for c := 0; c < n; c++ {
		wg.Go(func() {
			cl := h.client(opts...)
			rng := rand.New(rand.NewPCG(h.seed, uint64(c)))
			seen := linearizability.Seen{}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key, value := fmt.Sprintf("k%d", rng.IntN(4)), fmt.Sprintf("<%d.%d>", c, i)
				in := linearizability.Input{Key: key, Value: value}
				switch rng.IntN(5) {
				case 0:
					in.Op = linearizability.Get
				case 1:
					in.Op = linearizability.Put
				case 2:
					in.Op = linearizability.Append
				default:
					in = seen.Conditional(key, value, rng.IntN(2) == 0)
				}
				ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
				if out, err := rec.Do(ctx, cl, c, in); err == nil {
					seen.Observe(in, out)
				}
				cancel()
			}
		})
	}
	during()
	close(stop)
	wg.Wait()
	t.Logf("%d operations", rec.Len())
	if err := rec.Check(filepath.Join(h.dir, "porcupine"), time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestStorageBoundAfterGC moves 30 keys of 1000-byte values back and forth
// and checks the live bytes across all nine replicas once logs are
// compacted: one copy of each shard per replica, nothing per configuration.
func TestStorageBoundAfterGC(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3, TuneRaft: func(c *raftnode.Config) { c.SnapshotEntries, c.CatchUpEntries = 50, 5 }})
	h.join(1)
	cl := h.client()
	value := strings.Repeat("x", 1000)
	for i := 0; i < 30; i++ {
		h.put(cl, fmt.Sprintf("big-%d", i), value)
	}
	for round := 0; round < 3; round++ {
		h.join(2, 3)
		h.waitSettled()
		h.leave(2, 3)
		h.waitSettled()
	}
	h.join(2, 3)
	h.waitSettled()
	for _, r := range h.c.Replicas() {
		if s := h.c.Group(r); s != nil {
			ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
			if err := s.Node().Compact(ctx); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
	}
	live := 0
	for r, e := range h.c.Engines() {
		if r.Group == 0 {
			continue // the controller holds no shard data
		}
		n, err := liveBytes(e, r)
		if err != nil {
			t.Fatal(err)
		}
		live += n
	}
	const limit = 3 * (30000 + 12000)
	t.Logf("live bytes across all group replicas: %d (limit %d)", live, limit)
	if live > limit {
		t.Fatalf("%d live bytes, limit %d: migrated shards are not garbage collected", live, limit)
	}
}

// liveBytes counts what a group replica keeps: shard data and duplicate
// tables (state keys 'd' and 's') and retained raft log entries.
func liveBytes(e *storage.Engine, r cluster.Replica) (int, error) {
	rep := r
	var spans [][2][]byte
	for _, kind := range []byte{'d', 's'} {
		lo, hi := rep.StateSpan(kind)
		spans = append(spans, [2][]byte{lo, hi})
	}
	logPrefix := append([]byte{'r'}, rep.StateKey()[1:]...)
	logPrefix = append(logPrefix, 'l')
	spans = append(spans, [2][]byte{logPrefix, kvpb.PrefixEnd(logPrefix)})
	n := 0
	for _, sp := range spans {
		it, err := e.DB().NewIter(&pebble.IterOptions{LowerBound: sp[0], UpperBound: sp[1]})
		if err != nil {
			return 0, err
		}
		for it.First(); it.Valid(); it.Next() {
			n += len(it.Key()) + len(it.Value())
		}
		if err := it.Close(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// TestUnaffectedShardsKeepServing: while group 3 is dead, a newly joined
// group serves the shards it pulled from live groups, waits only for those
// of the dead group, and the live groups' other shards never stop.
func TestUnaffectedShardsKeepServing(t *testing.T) {
	h := start(t, cluster.Options{Groups: 4, Shards: 12})
	h.join(1, 2, 3)
	cl := h.client()
	ks := keys(40)
	for _, k := range ks {
		h.put(cl, k, "v")
	}
	h.waitSettled()
	before := cl.Config()
	h.c.StopGroup(3)
	h.join(4)
	after := h.latest()
	fromLive, fromDead := 0, 0
	for _, k := range ks {
		s := controller.ShardOf([]byte(k), len(after.Shards))
		prev, now := before.Shards[s], after.Shards[s]
		v, err := h.tryGet(cl, k, prev != 3)
		switch {
		case prev == 3 && now == 4, prev == 3 && now == 3:
			if err == nil {
				t.Fatalf("key %s served though its data is on the dead group", k)
			}
			fromDead++
		default:
			if err != nil || !bytes.Equal(v, []byte("v")) {
				t.Fatalf("key %s (shard %d, group %d -> %d) not served: %v", k, s, prev, now, err)
			}
			if now == 4 {
				fromLive++
			}
		}
	}
	if fromLive == 0 || fromDead == 0 {
		t.Fatalf("degenerate placement: %d keys pulled from live groups, %d waiting on the dead one", fromLive, fromDead)
	}
	h.startGroup(3)
	for _, k := range ks {
		h.check(cl, k, "v")
	}
}

func TestBadInput(t *testing.T) {
	h := startOneGroup(t)
	cl := h.client()
	ctx := h.ctx
	big := bytes.Repeat([]byte("k"), 4097)
	if _, err := cl.Put(ctx, big, []byte("v")); !errors.Is(err, client.ErrKeyTooLarge) {
		t.Fatalf("oversized key: %v", err)
	}
	if _, err := cl.Put(ctx, nil, []byte("v")); !errors.Is(err, client.ErrEmptyKey) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := cl.Get(ctx, big); !errors.Is(err, client.ErrKeyTooLarge) {
		t.Fatalf("get with an oversized key: %v", err)
	}
	if _, err := cl.Put(ctx, []byte("k"), bytes.Repeat([]byte("v"), 1<<20+1)); !errors.Is(err, client.ErrValueTooLarge) {
		t.Fatalf("oversized value: %v", err)
	}
	half := bytes.Repeat([]byte("v"), 600<<10)
	if _, err := cl.Put(ctx, []byte("k"), half); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Append(ctx, []byte("k"), half); !errors.Is(err, client.ErrValueTooLarge) {
		t.Fatalf("append past the limit: %v", err)
	}
	got, err := cl.Get(ctx, []byte("k"))
	v := got.Value
	if err != nil || !bytes.Equal(v, half) {
		t.Fatalf("a refused append changed the value (%d bytes, %v)", len(v), err)
	}
	if _, err := cl.Delete(ctx, []byte("k")); err != nil {
		t.Fatal(err)
	}
	if got, err := cl.Get(ctx, []byte("k")); err != nil || got.Found {
		t.Fatalf("deleted key: found %v, %v", got.Found, err)
	}
}

// TestBadRequestsToServers sends out-of-range and nonsensical requests
// straight to the services: typed errors, nothing changes.
func TestBadRequestsToServers(t *testing.T) {
	h := startOneGroup(t)
	cl := h.client()
	h.put(cl, "k", "v")
	latest := h.latest()
	ctl := h.controller()
	defer ctl.Close()
	for _, n := range []int64{-5, 1 << 62} {
		cfg, _, err := ctl.Query(h.ctx, n)
		if err != nil || cfg.Num != latest.Num {
			t.Fatalf("query %d: got configuration %d (%v), want the latest %d", n, cfg.Num, err, latest.Num)
		}
	}
	if _, err := ctl.Move(h.ctx, -1, 1); !errors.Is(err, controllerpb.ErrUnknownShard) {
		t.Fatalf("move of shard -1: %v", err)
	}
	for _, addr := range h.c.GroupAddrs(1) {
		conn, err := grpc.NewClient(addr, rpc.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		kv, handoff := kvpb.NewKVClient(conn), grouppb.NewHandoffClient(conn)
		for _, req := range []*grouppb.PullShardRequest{{ConfigNum: 1 << 62, Shard: 0}, {ConfigNum: latest.Num, Shard: 1 << 30}, {ConfigNum: 0, Shard: 0}} {
			stream, err := handoff.PullShard(h.ctx, req)
			if err == nil {
				_, err = stream.Recv()
			}
			err = kvpb.Errors.FromStatus(err)
			if !errors.Is(err, kvpb.ErrNotReady) && !errors.Is(err, kvpb.ErrStaleConfig) {
				t.Fatalf("pull %v: %v", req, err)
			}
		}
		// A request for another group is refused as such, never answered
		// as "configuration passed" (which makes a puller give up).
		stream, err := handoff.PullShard(h.ctx, &grouppb.PullShardRequest{ConfigNum: latest.Num, Shard: 0, Group: 99})
		if err == nil {
			_, err = stream.Recv()
		}
		if err = kvpb.Errors.FromStatus(err); !errors.Is(err, kvpb.ErrWrongGroup) {
			t.Fatalf("pull meant for group 99: %v", err)
		}
		if _, err := handoff.DeleteShard(h.ctx, &grouppb.DeleteShardRequest{ConfigNum: latest.Num, Shard: 0, Group: 99}); !errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrWrongGroup) {
			t.Fatalf("delete meant for group 99: %v", err)
		}
		for _, req := range []*grouppb.DeleteShardRequest{{ConfigNum: 1 << 62, Shard: 0}, {ConfigNum: latest.Num, Shard: 1 << 30}} {
			_, err := handoff.DeleteShard(h.ctx, req)
			err = kvpb.Errors.FromStatus(err)
			if err != nil && !errors.Is(err, kvpb.ErrNotReady) && !errors.Is(err, rpcerr.ErrNotLeader) {
				t.Fatalf("delete %v: %v", req, err)
			}
		}
		for _, op := range []kvpb.WriteOp{42, kvpb.WriteOp_WRITE_OP_UNSPECIFIED} {
			_, err = kv.Write(h.ctx, &kvpb.WriteRequest{Op: op, Key: []byte("k"), Value: []byte("x"), ClientId: 5, Seq: 1})
			if err = kvpb.Errors.FromStatus(err); !errors.Is(err, rpcerr.ErrMalformed) && !errors.Is(err, rpcerr.ErrNotLeader) {
				t.Fatalf("write op %d: %v", op, err)
			}
		}
		conn.Close()
	}
	h.check(cl, "k", "v")
	h.waitSettled()
	if cfg, _, _ := ctl.Query(h.ctx, -1); cfg.Num != latest.Num {
		t.Fatalf("bad requests created configuration %d", cfg.Num)
	}
}

// rawCodec sends bytes as they are, so a test can send what no client
// would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// TestMalformedRPCs sends undecodable and truncated request bytes to every
// method of both services: each is refused, and the services keep serving.
func TestMalformedRPCs(t *testing.T) {
	h := startOneGroup(t)
	cl := h.client()
	h.put(cl, "k", "v")
	valid, _ := proto.Marshal(&kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte("k"), Value: []byte("evil"), ClientId: 3, Seq: 1})
	bodies := [][]byte{{0xff, 0xff, 0xff, 0xff}, valid[:len(valid)-3], {0x0a, 0x80}}
	targets := map[string][]string{
		h.c.GroupAddrs(1)[0]:     {"/shardkv.kv.v1.KV/Write", "/shardkv.kv.v1.KV/Get", "/shardkv.internal.group.v1.Handoff/DeleteShard"},
		h.c.ControllerAddrs()[0]: {"/shardkv.controller.v1.Controller/Join", "/shardkv.controller.v1.Controller/Move", "/shardkv.controller.v1.Controller/Query"},
	}
	for addr, methods := range targets {
		conn, err := grpc.NewClient(addr, rpc.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range methods {
			for _, body := range bodies {
				var out []byte
				ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
				err := conn.Invoke(ctx, m, &body, &out, grpc.ForceCodec(rawCodec{}))
				cancel()
				if status.Code(err) != codes.Internal {
					t.Fatalf("%s with %x: %v, want a decoding error", m, body, err)
				}
			}
		}
		conn.Close()
	}
	h.check(cl, "k", "v")
	h.put(cl, "k2", "still serving")
}
