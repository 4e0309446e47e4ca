package watch_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/group/watch"
)

// serving is a group at configuration num serving shards 0..n-1.
func serving(num uint64, n int) group.Shards {
	s := group.Shards{ConfigNum: num, States: make([]group.ShardState, n)}
	for i := range s.States {
		s.States[i] = group.Serving
	}
	return s
}

func put(index uint64, shard int, key string, version uint64) group.Change {
	return group.Change{Kind: group.ChangeWrite, Index: index, Shard: shard, Op: kvpb.WriteOp_WRITE_OP_PUT,
		Key: []byte(key), Value: []byte(fmt.Sprint("v", index)), Version: version}
}

func newHub(cfg watch.Config, applied uint64) *watch.Hub {
	h := watch.NewDetached(cfg)
	h.Restored(applied, serving(1, 4))
	return h
}

func shards(ws ...*kvpb.WatchShard) []*kvpb.WatchShard { return ws }

// next returns w's next reply without waiting for a progress tick.
func next(t *testing.T, w *watch.Watcher) *kvpb.WatchReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := w.Next(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// keysOf lists the keys and indexes of a reply's events.
func keysOf(r *kvpb.WatchReply) []string {
	var out []string
	for _, ev := range r.GetEvents() {
		out = append(out, fmt.Sprintf("%s@%d", ev.GetKey(), ev.GetIndex()))
	}
	return out
}

// TestHubMatchesKeysAndPrefixes: a key watcher gets its key's changes
// only, a prefix watcher every key under its prefix (the empty prefix:
// all), each only in the shards it watches; a change is never sent twice.
func TestHubMatchesKeysAndPrefixes(t *testing.T) {
	h := newHub(watch.Config{}, 10)
	all := shards(&kvpb.WatchShard{Shard: 0}, &kvpb.WatchShard{Shard: 1})
	key := h.Watch(&kvpb.WatchRequest{Key: []byte("a/x"), Shards: all}, watch.KeyVersion{})
	pre := h.Watch(&kvpb.WatchRequest{Key: []byte("a/"), Prefix: true, Shards: all}, watch.KeyVersion{})
	every := h.Watch(&kvpb.WatchRequest{Prefix: true, Shards: shards(&kvpb.WatchShard{Shard: 1})}, watch.KeyVersion{})
	for _, w := range []*watch.Watcher{key, pre} {
		if r := next(t, w); len(r.GetNotices()) != 2 || r.GetNotices()[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED || r.GetNotices()[0].GetIndex() != 10 {
			t.Fatalf("want two STARTED at 10, got %v", r.GetNotices())
		}
	}
	next(t, every)
	h.Applied(12, []group.Change{put(11, 0, "a/x", 1), put(11, 1, "a/y", 1), put(12, 1, "b", 1), put(12, 2, "a/z", 1)}, nil)
	if got := keysOf(next(t, key)); fmt.Sprint(got) != "[a/x@11]" {
		t.Fatalf("key watcher: %v", got)
	}
	if got := keysOf(next(t, pre)); fmt.Sprint(got) != "[a/x@11 a/y@11]" {
		t.Fatalf("prefix watcher: %v (a/z is in shard 2, not watched)", got)
	}
	if got := keysOf(next(t, every)); fmt.Sprint(got) != "[a/y@11 b@12]" {
		t.Fatalf("every key of shard 1: %v", got)
	}
	key.Close()
	h.Applied(13, []group.Change{put(13, 0, "a/x", 2)}, nil)
	if got := keysOf(next(t, pre)); fmt.Sprint(got) != "[a/x@13]" {
		t.Fatalf("prefix watcher after the key watcher closed: %v", got)
	}
}

// TestHubResumesFromHistoryOrTellsAGap: a resume after an index the
// history covers replays exactly the changes after it; one before the
// history's start is COMPACTED; a snapshot install cancels every watcher
// and starts the history over.
func TestHubResumesFromHistoryOrTellsAGap(t *testing.T) {
	h := newHub(watch.Config{HistoryChanges: 4}, 10)
	for i := uint64(11); i <= 16; i++ {
		h.Applied(i, []group.Change{put(i, 0, "k", i-10)}, nil)
	}
	if lo, hi := h.Bounds(); lo != 12 || hi != 16 {
		t.Fatalf("history (%d, %d], want (12, 16]", lo, hi)
	}
	w := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: shards(&kvpb.WatchShard{Shard: 0, AfterIndex: 13})}, watch.KeyVersion{})
	if got := keysOf(next(t, w)); fmt.Sprint(got) != "[k@14 k@15 k@16]" {
		t.Fatalf("resume after 13: %v", got)
	}
	old := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: shards(&kvpb.WatchShard{Shard: 0, AfterIndex: 11})}, watch.KeyVersion{})
	if r := next(t, old); len(r.GetEvents()) != 0 || r.GetNotices()[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_COMPACTED || r.GetNotices()[0].GetIndex() != 12 {
		t.Fatalf("resume after 11, before the history: %v", r)
	}
	h.Restored(40, serving(1, 4))
	if _, err := w.Next(context.Background(), nil); !errors.Is(err, kvpb.ErrWatchFellBehind) {
		t.Fatalf("after a snapshot install: %v", err)
	}
	again := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: shards(&kvpb.WatchShard{Shard: 0, AfterIndex: 16})}, watch.KeyVersion{})
	if r := next(t, again); r.GetNotices()[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_COMPACTED {
		t.Fatalf("resume across a snapshot install: %v", r)
	}
}

// TestHubFellBehind: a watcher that does not read is cancelled once its
// queue holds WatcherBuffer events, without holding up Applied; the
// others go on.
func TestHubFellBehind(t *testing.T) {
	h := newHub(watch.Config{WatcherBuffer: 3}, 0)
	ws := shards(&kvpb.WatchShard{Shard: 0})
	slow := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: ws}, watch.KeyVersion{})
	fast := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: ws}, watch.KeyVersion{})
	next(t, fast)
	for i := uint64(1); i <= 5; i++ {
		h.Applied(i, []group.Change{put(i, 0, "k", i)}, nil)
		if got := keysOf(next(t, fast)); len(got) != 1 {
			t.Fatalf("fast watcher at %d: %v", i, got)
		}
	}
	if _, err := slow.Next(context.Background(), nil); !errors.Is(err, kvpb.ErrWatchFellBehind) {
		t.Fatalf("slow watcher: %v, want ErrWatchFellBehind", err)
	}
}

// TestHubFollowsShardsAcrossConfigurations: a shard waited for from its
// arrival in configuration N starts at the arrival (from the history, or
// live); a shard that leaves is told LEFT with the configuration its
// changes are at next, and none of its later changes follow.
func TestHubFollowsShardsAcrossConfigurations(t *testing.T) {
	h := newHub(watch.Config{}, 10)
	pulling := serving(2, 4)
	pulling.States[2], pulling.States[3] = group.Held, group.Pulling
	h.Applied(11, []group.Change{{Kind: group.ChangeLeft, Index: 11, Shard: 2, ConfigNum: 2}}, &pulling)
	live := h.Watch(&kvpb.WatchRequest{Prefix: true, Shards: shards(&kvpb.WatchShard{Shard: 3, ArrivedIn: 2}, &kvpb.WatchShard{Shard: 0})}, watch.KeyVersion{})
	next(t, live) // shard 0 started
	h.Applied(13, []group.Change{{Kind: group.ChangeArrived, Index: 12, Shard: 3, ConfigNum: 2}, put(13, 3, "x", 4)}, nil)
	r := next(t, live)
	if n := r.GetNotices(); len(n) != 1 || n[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED || n[0].GetIndex() != 12 || fmt.Sprint(keysOf(r)) != "[x@13]" {
		t.Fatalf("arrival: %v", r)
	}
	late := h.Watch(&kvpb.WatchRequest{Prefix: true, Shards: shards(&kvpb.WatchShard{Shard: 3, ArrivedIn: 2})}, watch.KeyVersion{})
	if r := next(t, late); fmt.Sprint(keysOf(r)) != "[x@13]" || r.GetNotices()[0].GetIndex() != 12 {
		t.Fatalf("arrival from the history: %v", r)
	}
	h.Applied(15, []group.Change{put(14, 3, "y", 1), {Kind: group.ChangeLeft, Index: 15, Shard: 3, ConfigNum: 3}}, nil)
	h.Applied(16, []group.Change{put(16, 3, "late", 1), put(16, 0, "z", 1)}, nil)
	r = next(t, live)
	if n := r.GetNotices(); fmt.Sprint(keysOf(r)) != "[y@14 z@16]" || len(n) != 1 || n[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_LEFT || n[0].GetConfigNum() != 3 {
		t.Fatalf("leaving: %v", r)
	}
	if r := next(t, h.Watch(&kvpb.WatchRequest{Prefix: true, Shards: shards(&kvpb.WatchShard{Shard: 2})}, watch.KeyVersion{})); r.GetNotices()[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_NOT_SERVED {
		t.Fatalf("a shard that is not served here: %v", r)
	}
}

// BenchmarkFanOut publishes changes of one key watched by 1,000 watchers
// on one replica's hub, each drained by its own goroutine as a stream's
// would be: the CPU per change delivered to all of them (ns/op), and per
// delivery (ns/delivery).
//
//	go test -run XXX -bench FanOut ./group/watch
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{0, 1, 1000} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) {
			h := newHub(watch.Config{WatcherBuffer: 1 << 20}, 0)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int, n)
			for i := 0; i < n; i++ {
				w := h.Watch(&kvpb.WatchRequest{Key: []byte("key"), Shards: shards(&kvpb.WatchShard{Shard: 0})}, watch.KeyVersion{})
				go func() {
					got := 0
					for got < b.N {
						r, err := w.Next(ctx, nil)
						if err != nil {
							break
						}
						got += len(r.GetEvents())
					}
					done <- got
				}()
			}
			value := make([]byte, 100)
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				h.Applied(uint64(i), []group.Change{{Kind: group.ChangeWrite, Index: uint64(i), Op: kvpb.WriteOp_WRITE_OP_PUT,
					Key: []byte("key"), Value: value, Version: uint64(i)}}, nil)
			}
			for i := 0; i < n; i++ {
				if got := <-done; got != b.N {
					b.Fatalf("a watcher got %d of %d", got, b.N)
				}
			}
			b.StopTimer()
			if n > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
			}
		})
	}
}

// versionsOf lists the keys and versions of a reply's events, and its
// notices' kinds and indexes.
func versionsOf(r *kvpb.WatchReply) string {
	var out []string
	for _, nt := range r.GetNotices() {
		out = append(out, fmt.Sprintf("%s@%d", nt.GetKind(), nt.GetIndex()))
	}
	for _, ev := range r.GetEvents() {
		out = append(out, fmt.Sprintf("%s=%d", ev.GetKey(), ev.GetVersion()))
	}
	return fmt.Sprint(out)
}

func del(index uint64, shard int, key string) group.Change {
	return group.Change{Kind: group.ChangeWrite, Index: index, Shard: shard, Op: kvpb.WriteOp_WRITE_OP_DELETE, Key: []byte(key)}
}

// TestHubFromVersion: a key watch from version v starts at the change
// that made v when the history holds it, now when the key's version is
// below v (skipping what comes before v), and is COMPACTED when v is older
// than the history; a delete ends the life v was of, so versions of an
// earlier life are never taken for v, and the delete itself is delivered.
func TestHubFromVersion(t *testing.T) {
	h := newHub(watch.Config{HistoryChanges: 5}, 10)
	for i := uint64(11); i <= 16; i++ { // k at versions 1..6, j at 11 and 13
		c := []group.Change{put(i, 0, "k", i-10)}
		if i == 11 || i == 13 {
			c = append(c, put(i, 0, "j", 1))
		}
		h.Applied(i, c, nil)
	}
	if lo, hi := h.Bounds(); lo != 12 || hi != 16 {
		t.Fatalf("history (%d, %d], want (12, 16]", lo, hi)
	}
	from := func(key string, v uint64, cur watch.KeyVersion) *watch.Watcher {
		return h.Watch(&kvpb.WatchRequest{Key: []byte(key), Shards: shards(&kvpb.WatchShard{Shard: 0, FromVersion: v})}, cur)
	}
	k6 := watch.KeyVersion{Version: 6, Applied: 16, Known: true}
	held := from("k", 4, k6)
	if got := versionsOf(next(t, held)); got != "[WATCH_NOTICE_KIND_STARTED@13 k=4 k=5 k=6]" {
		t.Fatalf("from version 4, in the history: %v", got)
	}
	if got := versionsOf(next(t, from("k", 2, k6))); got != "[WATCH_NOTICE_KIND_COMPACTED@12]" {
		t.Fatalf("from version 2, older than the history: %v", got)
	}
	ahead := from("k", 9, k6)
	if got := versionsOf(next(t, ahead)); got != "[WATCH_NOTICE_KIND_STARTED@16]" {
		t.Fatalf("from version 9, ahead of the key: %v", got)
	}
	// A key with no change in the history: its version now is the state
	// machine's.
	if got := versionsOf(next(t, from("m", 3, watch.KeyVersion{Version: 2, Applied: 16, Known: true}))); got != "[WATCH_NOTICE_KIND_STARTED@16]" {
		t.Fatalf("m from version 3 at version 2: %v", got)
	}
	if got := versionsOf(next(t, from("m", 2, watch.KeyVersion{Version: 2, Applied: 16, Known: true}))); got != "[WATCH_NOTICE_KIND_COMPACTED@12]" {
		t.Fatalf("m from version 2 at version 2, older than the history: %v", got)
	}
	if got := versionsOf(next(t, from("m", 3, watch.KeyVersion{}))); got != "[WATCH_NOTICE_KIND_NOT_SERVED@12]" {
		t.Fatalf("m with its version unknown: %v", got)
	}
	for i := uint64(17); i <= 19; i++ { // k at versions 7..9
		h.Applied(i, []group.Change{put(i, 0, "k", i-10)}, nil)
	}
	if got := versionsOf(next(t, held)); got != "[k=7 k=8 k=9]" {
		t.Fatalf("from version 4, live: %v", got)
	}
	if got := versionsOf(next(t, ahead)); got != "[k=9]" {
		t.Fatalf("from version 9, live: %v", got)
	}

	// Across a delete: k's versions from 1 again, after it (here in the
	// same batch entry, whose delete a start at version 1 skips).
	h.Applied(21, []group.Change{del(21, 0, "k"), put(21, 0, "k", 1)}, nil)
	if got := versionsOf(next(t, ahead)); got != "[k=0 k=1]" {
		t.Fatalf("from version 9 across a delete: %v", got)
	}
	k1 := watch.KeyVersion{Version: 1, Applied: 21, Known: true}
	if got := versionsOf(next(t, from("k", 1, k1))); got != "[WATCH_NOTICE_KIND_STARTED@20 k=1]" {
		t.Fatalf("from version 1 of the life after the delete: %v", got)
	}
	// Version 8 of k is in the history, but of the life the delete ended:
	// version 8 of this life is still to come, and version 2 first.
	dead := from("k", 8, k1)
	if got := versionsOf(next(t, dead)); got != "[WATCH_NOTICE_KIND_STARTED@21]" {
		t.Fatalf("from version 8 after the delete: %v", got)
	}
	for i := uint64(22); i <= 28; i++ {
		h.Applied(i, []group.Change{put(i, 0, "k", i-20)}, nil)
	}
	if got := versionsOf(next(t, dead)); got != "[k=8]" {
		t.Fatalf("from version 8 after the delete, live: %v", got)
	}
}
