package cluster_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/rpc"
)

// TestCASContention: clients increment one counter by compare-and-swap
// (read the value and version, put value+1 if the version is unchanged),
// through 10% request and reply loss, so conditional writes are retried.
// The final value is the number of increments that succeeded, and the
// key's version follows it (the first one created the key).
func TestCASContention(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1})
	h.join(1)
	const clients, attempts = 6, 25
	loss := lossy(h.seed, 0.1, 2*time.Millisecond)
	var succeeded, unknown, failed atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := h.client(client.WithDialOptions(rpc.DialOptions(loss)...), client.WithAttemptTimeout(500*time.Millisecond))
			for i := 0; i < attempts; i++ {
				ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
				got, err := cl.Get(ctx, []byte("counter"))
				if err != nil {
					cancel()
					t.Errorf("get: %v", err)
					return
				}
				n := 0
				if got.Found {
					if n, err = strconv.Atoi(string(got.Value)); err != nil {
						cancel()
						t.Errorf("counter %q", got.Value)
						return
					}
				}
				res, err := cl.Put(ctx, []byte("counter"), []byte(strconv.Itoa(n+1)), client.IfVersion(got.Version))
				cancel()
				switch {
				case errors.Is(err, client.ErrUnknownOutcome):
					unknown.Add(1)
				case err != nil:
					t.Errorf("put: %v", err)
					return
				case res.Succeeded:
					succeeded.Add(1)
					if res.Version != got.Version+1 {
						t.Errorf("a CAS on version %d made version %d", got.Version, res.Version)
					}
				default:
					failed.Add(1)
					if res.Version == got.Version {
						t.Errorf("a CAS on version %d failed, and the key is still at that version", got.Version)
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	got, err := h.client().Get(h.ctx, []byte("counter"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(string(got.Value))
	t.Logf("%d increments succeeded, %d lost the race, %d unknown; counter %d at version %d",
		succeeded.Load(), failed.Load(), unknown.Load(), n, got.Version)
	// An unknown outcome was applied once or not at all.
	if s := int(succeeded.Load()); n < s || n > s+int(unknown.Load()) {
		t.Fatalf("counter %d after %d successful increments (%d unknown)", n, s, unknown.Load())
	}
	if got.Version != uint64(n) {
		t.Fatalf("counter %d at version %d: every increment is one write", n, got.Version)
	}
	if succeeded.Load() == 0 || failed.Load() == 0 {
		t.Fatalf("no contention: %d succeeded, %d failed", succeeded.Load(), failed.Load())
	}
}

// TestVersionsSurviveMigration: a key written three times keeps its value
// and version 3 when its shard moves to another group; the next put makes
// it 4, and a conditional write on the old version fails there.
func TestVersionsSurviveMigration(t *testing.T) {
	h := start(t, cluster.Options{Groups: 2})
	h.join(1, 2)
	h.waitSettled()
	cl := h.client()
	const k = "moved"
	h.put(cl, k, "a")
	h.appendTo(cl, k, "b")
	h.appendTo(cl, k, "c")
	cfg := cl.Config()
	shard := controller.ShardOf([]byte(k), len(cfg.Shards))
	to := uint64(1)
	if cfg.Shards[shard] == 1 {
		to = 2
	}
	ctl, err := h.c.ControllerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if _, err := ctl.Move(h.ctx, shard, to); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	got, err := cl.Get(ctx, []byte(k))
	if err != nil || string(got.Value) != "abc" || got.Version != 3 {
		t.Fatalf("after the move to group %d: %q version %d, %v", to, got.Value, got.Version, err)
	}
	if g := cl.Config().Shards[shard]; g != to {
		t.Fatalf("the client routes shard %d to group %d, want %d", shard, g, to)
	}
	res, err := cl.Put(ctx, []byte(k), []byte("d"), client.IfVersion(2))
	if err != nil || res.Succeeded || res.Version != 3 {
		t.Fatalf("a CAS on a stale version after the move: %+v, %v", res, err)
	}
	res, err = cl.Put(ctx, []byte(k), []byte("d"), client.IfVersion(3), client.WithValue())
	if err != nil || !res.Succeeded || res.Version != 4 || string(res.Value) != "d" {
		t.Fatalf("a CAS on the current version after the move: %+v, %v", res, err)
	}
}
