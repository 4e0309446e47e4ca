package console

import (
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/kvpb"
)

// TestSampleAfterRestart: a replica that restarted and answered more
// requests by the next poll than before (its count grew) starts a new
// series; the difference from its old histogram is no traffic (buckets
// that went down would wrap around and make the p99 up).
func TestSampleAfterRestart(t *testing.T) {
	upper := []float64{1, 2, 4, 8}
	status := func(count uint64, cumulative ...uint64) []status {
		return []status{{addr: "a", reply: &kvpb.StatusReply{Requests: &kvpb.Latency{Count: count, UpperMs: upper, Cumulative: cumulative}}}}
	}
	for _, tc := range []struct {
		name          string
		before, after []uint64 // cumulative counts; the last is the count
	}{
		{"fast, then slow", []uint64{100, 100, 100, 100}, []uint64{0, 0, 0, 150}},
		{"slow, then fast", []uint64{0, 0, 0, 100}, []uint64{150, 150, 150, 150}},
	} {
		c := New(Config{})
		now := time.Now()
		c.sample(1, status(tc.before[3], tc.before...), now)
		if s := c.sample(1, status(tc.after[3], tc.after...), now.Add(time.Second)); s.P99Ms != 0 || s.OpsPerSec != 0 {
			t.Errorf("%s: a restarted replica's first reading gave %+v, want no traffic", tc.name, s)
		}
		// The next difference is its own: 10 requests of at most 2 ms.
		next := make([]uint64, 4)
		for i, v := range tc.after {
			next[i] = v + min(uint64(i), 1)*10
		}
		if s := c.sample(1, status(next[3], next...), now.Add(2*time.Second)); s.P99Ms != 2 || s.OpsPerSec != 10 {
			t.Errorf("%s: after the restart %+v, want 10 ops/s, p99 2 ms", tc.name, s)
		}
	}
}

// TestForgetsGoneReplicas: the addresses a configuration no longer names
// keep neither a connection nor a reading.
func TestForgetsGoneReplicas(t *testing.T) {
	c := New(Config{})
	defer c.pool.Close()
	for _, a := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} {
		if _, err := c.pool.Get(a); err != nil {
			t.Fatal(err)
		}
		c.last[a] = reading{}
	}
	c.forgetGone(config.Config{Num: 2, Groups: map[uint64][]string{1: {"127.0.0.1:1"}, 2: {"127.0.0.1:3"}}})
	if n := c.pool.Len(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	if _, ok := c.last["127.0.0.1:2"]; ok || len(c.last) != 2 {
		t.Errorf("readings of %v, want those of 127.0.0.1:1 and :3", c.last)
	}
}

// TestHistoryDescribesOnlyKnownChanges: past the window, the oldest
// configuration the console keeps is not described against an empty one
// ("join" of every group): an entry is listed only with its predecessor.
func TestHistoryDescribesOnlyKnownChanges(t *testing.T) {
	c := New(Config{})
	defer c.pool.Close()
	groups := map[uint64][]string{1: {"a"}, 2: {"b"}}
	const latest = historyLen + 10
	for n := uint64(latest - historyLen); n <= latest; n++ {
		// Every configuration moves shard 0 between the two groups.
		c.configs[n] = config.Config{Num: n, Shards: []uint64{n%2 + 1, 1}, Groups: groups}
	}
	h := c.history(latest)
	if len(h) != historyLen {
		t.Errorf("%d entries, want %d", len(h), historyLen)
	}
	for _, ch := range h {
		if ch.What != "1 shard(s) moved" {
			t.Errorf("configuration %d described as %q, want a shard moved", ch.Num, ch.What)
		}
	}
	// A predecessor not yet fetched (the controller did not answer):
	// the history stops above it.
	delete(c.configs, latest-5)
	for _, ch := range c.history(latest) {
		if ch.Num <= latest-4 {
			t.Errorf("configuration %d listed without its predecessor: %q", ch.Num, ch.What)
		}
	}
}
