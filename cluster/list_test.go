package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller"
)

// listAll lists opts page by page, each page After the previous one's
// Next, with pages of limit keys (calling between, if set, after every
// page), and returns every key listed. It fails the test on an error, an
// empty page with More, or a key not above the one before it (a key
// twice, or out of order).
func (h *harness) listAll(cl *client.Client, limit int, between func(client.ListResult), opts ...client.ListOption) []client.KeyValue {
	h.t.Helper()
	var all []client.KeyValue
	opts = append(opts, client.WithLimit(limit))
	for {
		var page client.ListResult
		h.must("list", func(ctx context.Context) (err error) {
			page, err = cl.List(ctx, opts...)
			return err
		})
		for _, kv := range page.KVs {
			if n := len(all); n > 0 && bytes.Compare(kv.Key, all[n-1].Key) <= 0 {
				h.t.Fatalf("listed %q after %q", kv.Key, all[n-1].Key)
			}
			all = append(all, kv)
		}
		if !page.More {
			return all
		}
		if len(page.KVs) == 0 {
			h.t.Fatal("an empty page with More")
		}
		if between != nil {
			between(page)
		}
		opts = append(opts, client.After(page.Next))
	}
}

// putKeys puts n keys named by format from 0 (the i-th holding "v<i>"),
// and returns them, key -> value.
func (h *harness) putKeys(cl *client.Client, format string, n int) map[string]string {
	h.t.Helper()
	kvs := map[string]string{}
	for i := 0; i < n; i++ {
		k, v := fmt.Sprintf(format, i), fmt.Sprint("v", i)
		h.put(cl, k, v)
		kvs[k] = v
	}
	return kvs
}

// checkListed fails the test unless listed holds every key of want
// (key -> value) exactly once, with its value (keysOnly: no value).
func checkListed(t *testing.T, listed []client.KeyValue, want map[string]string, keysOnly bool) {
	t.Helper()
	seen := map[string]bool{}
	for _, kv := range listed {
		v, ok := want[string(kv.Key)]
		if !ok {
			continue
		}
		seen[string(kv.Key)] = true // listAll saw each key once
		if keysOnly && (kv.Value != nil || kv.Version != 0) || !keysOnly && (string(kv.Value) != v || kv.Version != 1) {
			t.Fatalf("%q listed as %q version %d, want %q (keys only: %v)", kv.Key, kv.Value, kv.Version, v, keysOnly)
		}
	}
	if len(seen) != len(want) {
		for k := range want {
			if !seen[k] {
				t.Fatalf("%q, present throughout, was not listed (%d of %d listed)", k, len(seen), len(want))
			}
		}
	}
}

// TestListingDuringMigrations lists the store, page after page, again and
// again, while groups join and leave (one stops in the middle of a
// migration), shards move, and writers create and delete keys between the
// listed ones: every key present for the whole listing is returned
// exactly once, with its value, and no key twice.
func TestListingDuringMigrations(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3})
	h.join(1)
	cl := h.client()
	stable := h.putKeys(cl, "s/%03d", 150)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Writers: keys between the stable ones, created and deleted.
	for w := 0; w < 2; w++ {
		wg.Go(func() {
			wcl := h.client()
			rng := rand.New(rand.NewPCG(h.seed, uint64(w)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := []byte(fmt.Sprintf("s/%03d.%d", rng.IntN(150), w))
				ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
				if rng.IntN(2) == 0 {
					_, _ = wcl.Put(ctx, k, []byte("churn"))
				} else {
					_, _ = wcl.Delete(ctx, k)
				}
				cancel()
			}
		})
	}
	// Listers: whole listings, in pages of random sizes, keys only or not.
	var (
		mu       sync.Mutex
		listings int
	)
	for l := 0; l < 2; l++ {
		wg.Go(func() {
			lcl := h.client()
			rng := rand.New(rand.NewPCG(h.seed, 10+uint64(l)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				keysOnly := rng.IntN(2) == 0
				opts := []client.ListOption{client.WithPrefix([]byte("s/"))}
				if keysOnly {
					opts = append(opts, client.WithKeysOnly())
				}
				listed := h.listAll(lcl, 1+rng.IntN(40), nil, opts...)
				checkListed(t, listed, stable, keysOnly)
				mu.Lock()
				listings++
				mu.Unlock()
			}
		})
	}
	// awaitListing waits until a listing has ended after the previous
	// change: each change then happens while listings are running, on
	// any machine (a fixed pause let a slow machine run the changes past
	// listings that had not got to their first page).
	ended := 0
	awaitListing := func() {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			mu.Lock()
			n := listings
			mu.Unlock()
			if n > ended {
				ended = n
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no listing ended within a minute (%d so far)", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	rng := rand.New(rand.NewPCG(h.seed, 20))
	ctl := h.controller()
	defer ctl.Close()
	for step := 0; step < 7; step++ {
		awaitListing()
		switch step {
		case 0:
			// Group 2 pulls its shards from group 1, which stops a while:
			// they are not ready there meanwhile, and must be waited for.
			h.join(2)
			h.c.StopGroup(1)
			time.Sleep(500 * time.Millisecond)
			h.startGroup(1)
		case 1:
			h.join(3)
		case 2, 5:
			cfg := h.latest()
			shard := rng.IntN(len(cfg.Shards))
			to := cfg.GroupIDs()[rng.IntN(len(cfg.Groups))]
			if _, err := ctl.Move(h.ctx, shard, to); err != nil {
				t.Fatal(err)
			}
		case 3:
			h.leave(1)
		case 4:
			h.join(1)
		case 6:
			h.leave(3)
		}
	}
	h.waitSettled()
	awaitListing() // one more listing across the last change
	close(stop)
	wg.Wait()
	mu.Lock()
	t.Logf("%d whole listings ended during the changes", listings)
	mu.Unlock()
	checkListed(t, h.listAll(cl, 1000, nil, client.WithPrefix([]byte("s/"))), stable, false)
}

// TestListingThroughMovesOfTheCursorShard lists page by page and, after
// every page, moves the shard of the page's last key (the cursor) to the
// other group, without waiting for the move: the next page reads it
// wherever it is served. Every key is listed exactly once; a key written
// after the cursor during the listing is listed, one before it is not.
func TestListingThroughMovesOfTheCursorShard(t *testing.T) {
	h := start(t, cluster.Options{Groups: 2})
	h.join(1, 2)
	h.waitSettled()
	cl := h.client()
	want := h.putKeys(cl, "k%02d", 60)
	ctl := h.controller()
	defer ctl.Close()
	moves := 0
	listed := h.listAll(cl, 5, func(page client.ListResult) {
		if moves == 0 {
			h.put(cl, "a-behind", "x") // before the cursor: not listed
			h.put(cl, "z-ahead", "y")  // after it, before the next page: listed
			want["z-ahead"] = "y"
		}
		cfg := cl.Config()
		shard := controller.ShardOf(page.Next, len(cfg.Shards))
		to := uint64(1)
		if cfg.Shards[shard] == 1 {
			to = 2
		}
		if _, err := ctl.Move(h.ctx, shard, to); err != nil {
			t.Fatal(err)
		}
		moves++
	})
	t.Logf("%d keys listed through %d moves", len(listed), moves)
	if moves < 10 {
		t.Fatalf("%d moves", moves)
	}
	checkListed(t, listed, want, false)
	if len(listed) != len(want) {
		t.Fatalf("listed %d keys, want %d (a-behind is before the cursor)", len(listed), len(want))
	}
}
