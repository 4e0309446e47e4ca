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
	key := h.Watch(&kvpb.WatchRequest{Key: []byte("a/x"), Shards: all})
	pre := h.Watch(&kvpb.WatchRequest{Key: []byte("a/"), Prefix: true, Shards: all})
	every := h.Watch(&kvpb.WatchRequest{Prefix: true, Shards: shards(&kvpb.WatchShard{Shard: 1})})
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
	w := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: shards(&kvpb.WatchShard{Shard: 0, AfterIndex: 13})})
	if got := keysOf(next(t, w)); fmt.Sprint(got) != "[k@14 k@15 k@16]" {
		t.Fatalf("resume after 13: %v", got)
	}
	old := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: shards(&kvpb.WatchShard{Shard: 0, AfterIndex: 11})})
	if r := next(t, old); len(r.GetEvents()) != 0 || r.GetNotices()[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_COMPACTED || r.GetNotices()[0].GetIndex() != 12 {
		t.Fatalf("resume after 11, before the history: %v", r)
	}
	h.Restored(40, serving(1, 4))
	if _, err := w.Next(context.Background(), nil); !errors.Is(err, kvpb.ErrWatchFellBehind) {
		t.Fatalf("after a snapshot install: %v", err)
	}
	again := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: shards(&kvpb.WatchShard{Shard: 0, AfterIndex: 16})})
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
	slow := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: ws})
	fast := h.Watch(&kvpb.WatchRequest{Key: []byte("k"), Shards: ws})
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
	live := h.Watch(&kvpb.WatchRequest{Prefix: true, Shards: shards(&kvpb.WatchShard{Shard: 3, ArrivedIn: 2}, &kvpb.WatchShard{Shard: 0})})
	next(t, live) // shard 0 started
	h.Applied(13, []group.Change{{Kind: group.ChangeArrived, Index: 12, Shard: 3, ConfigNum: 2}, put(13, 3, "x", 4)}, nil)
	r := next(t, live)
	if n := r.GetNotices(); len(n) != 1 || n[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED || n[0].GetIndex() != 12 || fmt.Sprint(keysOf(r)) != "[x@13]" {
		t.Fatalf("arrival: %v", r)
	}
	late := h.Watch(&kvpb.WatchRequest{Prefix: true, Shards: shards(&kvpb.WatchShard{Shard: 3, ArrivedIn: 2})})
	if r := next(t, late); fmt.Sprint(keysOf(r)) != "[x@13]" || r.GetNotices()[0].GetIndex() != 12 {
		t.Fatalf("arrival from the history: %v", r)
	}
	h.Applied(15, []group.Change{put(14, 3, "y", 1), {Kind: group.ChangeLeft, Index: 15, Shard: 3, ConfigNum: 3}}, nil)
	h.Applied(16, []group.Change{put(16, 3, "late", 1), put(16, 0, "z", 1)}, nil)
	r = next(t, live)
	if n := r.GetNotices(); fmt.Sprint(keysOf(r)) != "[y@14 z@16]" || len(n) != 1 || n[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_LEFT || n[0].GetConfigNum() != 3 {
		t.Fatalf("leaving: %v", r)
	}
	if r := next(t, h.Watch(&kvpb.WatchRequest{Prefix: true, Shards: shards(&kvpb.WatchShard{Shard: 2})})); r.GetNotices()[0].GetKind() != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_NOT_SERVED {
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
				w := h.Watch(&kvpb.WatchRequest{Key: []byte("key"), Shards: shards(&kvpb.WatchShard{Shard: 0})})
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
