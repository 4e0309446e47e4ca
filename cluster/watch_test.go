package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/group/watch"
)

// created waits for a watch's Created response.
func created(t *testing.T, ch client.WatchChan) {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok || !r.Created {
			t.Fatalf("want Created first, got %+v (open %v)", r, ok)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the watch was not created within 30s")
	}
}

// ackedWrite is a write the cluster acknowledged: the state it left.
type ackedWrite struct {
	key     string
	op      client.EventType
	value   string
	version uint64
}

// leaderOf returns the replica of group gid that leads, waiting for one.
func (h *harness) leaderOf(gid uint64) cluster.Replica {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range h.c.Replicas() {
			if s := h.c.Group(r); r.Group == gid && s != nil && s.Node().Status().IsLeader {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("group %d has no leader", gid)
	return cluster.Replica{}
}

// TestWatchAcrossLeaderKillAndMigration: a key watch and a prefix watch
// see every acknowledged change of their keys exactly once, in version
// order (a contiguous chain of versions per key, each acknowledged write
// in it, and the final state last), while the watched key's group loses
// its leader and then the key's shard moves to the other group.
func TestWatchAcrossLeaderKillAndMigration(t *testing.T) {
	h := start(t, cluster.Options{Groups: 2, WatchProgress: 100 * time.Millisecond})
	h.join(1, 2)
	h.waitSettled()
	cl := h.client()
	const key = "w/watched"
	others := []string{"w/a", "w/b", "w/c", "x/unwatched"}
	wctx, wcancel := context.WithCancel(h.ctx)
	defer wcancel()
	keyWatch := cl.Watch(wctx, []byte(key), client.WithCreatedNotify())
	prefixWatch := cl.Watch(wctx, []byte("w/"), client.WatchPrefix(), client.WithCreatedNotify())
	created(t, keyWatch)
	created(t, prefixWatch)

	var mu sync.Mutex
	var acked []ackedWrite
	n := 0
	// exists tells whether a key exists, as far as acknowledged writes
	// tell: a delete of a key that does not exist changes nothing and
	// makes no event.
	exists := map[string]*bool{}
	writes := func(count int) {
		for i := 0; i < count; i++ {
			for ki, k := range append([]string{key}, others...) {
				n++
				ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
				var res client.WriteResult
				var err error
				op, v := client.EventPut, fmt.Sprintf("v%d", n)
				switch (i + ki) % 5 {
				case 0, 1:
					res, err = cl.Put(ctx, []byte(k), []byte(v))
				case 2:
					op = client.EventAppend
					res, err = cl.Append(ctx, []byte(k), []byte(v))
				case 3:
					op, v = client.EventDelete, ""
					res, err = cl.Delete(ctx, []byte(k))
				default:
					// A conditional write that fails changes nothing and
					// makes no event.
					res, err = cl.Put(ctx, []byte(k), []byte(v), client.IfVersion(1<<40))
					op = 0
				}
				cancel()
				if errors.Is(err, client.ErrUnknownOutcome) {
					exists[k] = nil
					continue // may or may not be in the chain
				}
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				existed := exists[k]
				if op != 0 && res.Succeeded {
					e := res.Version > 0
					exists[k] = &e
				}
				if op == client.EventDelete && (existed == nil || !*existed) {
					continue // an event only if the key existed; unknown if unknown
				}
				if op != 0 && res.Succeeded {
					mu.Lock()
					acked = append(acked, ackedWrite{key: k, op: op, value: v, version: res.Version})
					mu.Unlock()
				}
			}
		}
	}
	writes(10)
	shard := controller.ShardOf([]byte(key), len(cl.Config().Shards))
	from := cl.Config().Shards[shard]
	// The replica streaming to the watchers fails (they resume on
	// another), and comes back; then the group's leader is killed.
	var streaming cluster.Replica
	for _, r := range h.c.Replicas() {
		if s := h.c.Group(r); r.Group == from && s != nil && s.Watchers() > 0 {
			streaming = r
		}
	}
	if streaming.Group == 0 {
		t.Fatalf("no replica of group %d serves the watches", from)
	}
	t.Logf("stopping %v, which streams to the watchers", streaming)
	h.c.StopReplica(streaming)
	writes(5)
	if err := h.c.StartReplica(streaming); err != nil {
		t.Fatal(err)
	}
	leader := h.leaderOf(from)
	t.Logf("stopping %v, the leader of the watched key's group", leader)
	h.c.StopReplica(leader)
	writes(10)
	to := uint64(1)
	if from == 1 {
		to = 2
	}
	ctl := h.controller()
	if _, err := ctl.Move(h.ctx, int(shard), to); err != nil {
		t.Fatal(err)
	}
	writes(5) // during the move
	h.waitSettled()
	if got := h.latest().Shards[shard]; got != to {
		t.Fatalf("shard %d is group %d's, not moved to %d", shard, got, to)
	}
	writes(10)

	// The final state of every key, read linearizably: each watch must end
	// with it.
	final := map[string]client.GetResult{}
	for _, k := range append([]string{key}, others...) {
		ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
		got, err := cl.Get(ctx, []byte(k))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		final[k] = got
	}
	ackedOf := map[string]int{}
	for _, a := range acked {
		ackedOf[a.key]++
	}
	check := func(name string, ch client.WatchChan, watched func(string) bool) {
		events := map[string][]client.Event{}
		done := func() bool {
			for k, f := range final {
				if !watched(k) {
					continue
				}
				evs := events[k]
				if len(evs) == 0 || len(evs) < ackedOf[k] {
					return false
				}
				if last := evs[len(evs)-1]; last.Version != f.Version || !bytes.Equal(last.Value, f.Value) {
					return false
				}
			}
			return true
		}
		timeout := time.After(60 * time.Second)
	read:
		for !done() {
			select {
			case r := <-ch:
				if r.Gap != nil || r.Canceled {
					t.Fatalf("%s: %v", name, r.Err())
				}
				for _, ev := range r.Events {
					if !watched(string(ev.Key)) {
						t.Fatalf("%s: an event of %q, not watched", name, ev.Key)
					}
					events[string(ev.Key)] = append(events[string(ev.Key)], ev)
				}
			case <-timeout:
				t.Errorf("%s: the watch did not reach the final state within 60s", name)
				break read
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for k, evs := range events {
			// A contiguous chain: every applied change once, in order.
			var prev uint64
			for i, ev := range evs {
				want := prev + 1
				if ev.Type == client.EventDelete {
					want = 0
				}
				if ev.Version != want || (i > 0 && ev.Type == client.EventDelete && prev == 0) {
					t.Fatalf("%s: %q event %d (%v version %d) after version %d: a change missed or repeated", name, k, i, ev.Type, ev.Version, prev)
				}
				prev = ev.Version
			}
			// Every acknowledged write in it, in order.
			j := 0
			for _, a := range acked {
				if a.key != k {
					continue
				}
				for j < len(evs) && !(evs[j].Type == a.op && evs[j].Version == a.version && (a.op != client.EventPut || string(evs[j].Value) == a.value)) {
					j++
				}
				if j == len(evs) {
					var got []string
					for _, ev := range evs {
						got = append(got, fmt.Sprintf("%v/%d/%.8s", ev.Type, ev.Version, ev.Value))
					}
					var want []string
					for _, a := range acked {
						if a.key == k {
							want = append(want, fmt.Sprintf("%v/%d/%.8s", a.op, a.version, a.value))
						}
					}
					t.Fatalf("%s: %q: the acknowledged %v to version %d (%q) is not in the watch's events, in order: %v; acknowledged %v", name, k, a.op, a.version, a.value, got, want)
				}
				j++
			}
		}
		n := 0
		for _, a := range acked {
			if watched(a.key) {
				n++
			}
		}
		t.Logf("%s: %d keys, %d acknowledged writes, all seen once and in order", name, len(events), n)
	}
	check("key watch", keyWatch, func(k string) bool { return k == key })
	check("prefix watch", prefixWatch, func(k string) bool { return strings.HasPrefix(k, "w/") })
}

// TestWatchFallenBehindIsToldOfAGap: a watcher that stops reading while
// the watched key changes far more than the replicas' history holds is
// cancelled by the servers (its queue is bounded), and when it reads
// again it is told it missed changes (a gap naming the key's shard), then
// sees the changes after it.
func TestWatchFallenBehindIsToldOfAGap(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1, Watch: watch.Config{HistoryChanges: 20, WatcherBuffer: 8}})
	h.join(1)
	h.waitSettled()
	cl := h.client()
	const key = "slow"
	ch := cl.Watch(h.ctx, []byte(key), client.WithCreatedNotify())
	created(t, ch)
	big := bytes.Repeat([]byte("x"), 256<<10)
	for i := 0; i < 120; i++ { // 30 MB: beyond what gRPC's windows buffer
		h.must("put", func(ctx context.Context) error { _, err := cl.Put(ctx, []byte(key), big); return err })
	}
	h.must("put", func(ctx context.Context) error { _, err := cl.Put(ctx, []byte(key), []byte("last")); return err })
	// The watcher reads again: it is told of the gap, then (the watch
	// goes on from now) sees the writes made after it.
	var gap error
	for gap == nil {
		select {
		case r := <-ch:
			if r.Gap != nil {
				gap = r.Gap
				t.Logf("told: %v", gap)
				if !errors.Is(gap, client.ErrWatchGap) || r.GapShard != controller.ShardOf([]byte(key), len(cl.Config().Shards)) {
					t.Fatalf("gap %v shard %d", gap, r.GapShard)
				}
			}
		case <-time.After(60 * time.Second):
			t.Fatal("the watcher fell behind and was never told it missed changes")
		}
	}
	// From now, as a replica (perhaps a follower still applying the
	// puts above) sees it: every change after, once and in order.
	var seen []client.Event
	for v := 0; len(seen) == 0 || string(seen[len(seen)-1].Value) != "after"; v++ {
		if v == 100 {
			t.Fatal("no event of a put after the gap")
		}
		h.must("put", func(ctx context.Context) error { _, err := cl.Put(ctx, []byte(key), []byte("after")); return err })
		select {
		case r := <-ch:
			seen = append(seen, r.Events...)
		case <-time.After(time.Second):
		}
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Version != seen[i-1].Version+1 {
			t.Fatalf("after the gap: version %d then %d", seen[i-1].Version, seen[i].Version)
		}
	}
}

// TestWatchFromVersion: a key watch from version v delivers the key's
// changes from the one that made v, in order, then the live ones; from a
// version the key has not reached yet, the first event is that version;
// from a version older than the replicas' history, a gap is told.
func TestWatchFromVersion(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1, Watch: watch.Config{HistoryChanges: 16}})
	h.join(1)
	h.waitSettled()
	cl := h.client()
	const key = "resumed"
	n := 0 // the puts made: each makes the next version
	put := func() {
		n++
		h.must("put", func(ctx context.Context) error {
			_, err := cl.Put(ctx, []byte(key), []byte(fmt.Sprint("v", n)))
			return err
		})
	}
	// versions reads ch until it has seen version last, and returns the
	// versions it saw.
	versions := func(ch client.WatchChan, last uint64) []uint64 {
		t.Helper()
		var got []uint64
		for len(got) == 0 || got[len(got)-1] < last {
			select {
			case r, ok := <-ch:
				if !ok || r.Err() != nil {
					t.Fatalf("after versions %v: %+v (open %v)", got, r, ok)
				}
				for _, ev := range r.Events {
					if string(ev.Value) != fmt.Sprint("v", ev.Version) {
						t.Fatalf("version %d has value %q", ev.Version, ev.Value)
					}
					got = append(got, ev.Version)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("after versions %v: nothing more within 30s", got)
			}
		}
		return got
	}
	for n < 5 {
		put()
	}
	wctx, wcancel := context.WithCancel(h.ctx)
	defer wcancel()
	held := cl.Watch(wctx, []byte(key), client.FromVersion(3))
	if got := versions(held, 5); fmt.Sprint(got) != "[3 4 5]" {
		t.Fatalf("from version 3 of 5: %v", got)
	}
	ahead := cl.Watch(wctx, []byte(key), client.FromVersion(8), client.WithCreatedNotify())
	created(t, ahead)
	put()
	if got := versions(held, 6); fmt.Sprint(got) != "[6]" {
		t.Fatalf("from version 3, live: %v", got)
	}
	for n < 9 {
		put()
	}
	if got := versions(ahead, 9); fmt.Sprint(got) != "[8 9]" {
		t.Fatalf("from version 8 of 6: %v", got)
	}
	// Version 2 is older than what the replicas hold (16 changes) once 30
	// more were made: the watch says so, then goes on from now.
	for n < 40 {
		put()
	}
	old := cl.Watch(wctx, []byte(key), client.FromVersion(2))
	select {
	case r := <-old:
		if !errors.Is(r.Gap, client.ErrWatchGap) {
			t.Fatalf("from version 2 of 40, beyond the history: %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("from version 2 of 40, beyond the history: no gap told within 30s")
	}
	// From now, as the replica that streams sees it: once it is watched
	// again, every change once and in order.
	var after []client.Event
	for len(after) == 0 {
		if n == 140 {
			t.Fatal("no event of a put after the gap")
		}
		put()
		select {
		case r := <-old:
			after = append(after, r.Events...)
		case <-time.After(time.Second):
		}
	}
	put()
	var got []uint64
	for _, ev := range after {
		got = append(got, ev.Version)
	}
	if got[len(got)-1] < uint64(n) {
		got = append(got, versions(old, uint64(n))...)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Fatalf("after the gap: versions %v", got)
		}
	}
}

// TestWatchDeliversEveryChangeOfABatch: writes from many clients at once
// are applied in batches (many changes at one log index); a prefix watch
// delivers each of them once.
func TestWatchDeliversEveryChangeOfABatch(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1})
	h.join(1)
	h.waitSettled()
	cl := h.client()
	ch := cl.Watch(h.ctx, []byte("b/"), client.WatchPrefix(), client.WithCreatedNotify())
	created(t, ch)
	const writers, each = 16, 20
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				h.must("put", func(ctx context.Context) error {
					_, err := cl.Put(ctx, []byte(fmt.Sprint("b/", g, "/", i)), []byte("x"))
					return err
				})
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for n := 0; n < writers*each; {
		select {
		case r := <-ch:
			for _, ev := range r.Events {
				if seen[string(ev.Key)]++; seen[string(ev.Key)] > 1 {
					t.Fatalf("%s delivered twice", ev.Key)
				}
				n++
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d changes of %d delivered", n, writers*each)
		}
	}
}
