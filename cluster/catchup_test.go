package cluster_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/raftnode"
)

// TestCatchUpReport measures how long a replica added to a group takes to
// catch up (by snapshot) as a function of the group's data size, and the
// latency of foreground writes before and while it does. It is a report,
// not a check: run it with SHARDKV_CATCHUP_MB=10,100,500.
func TestCatchUpReport(t *testing.T) {
	sizes := os.Getenv("SHARDKV_CATCHUP_MB")
	if sizes == "" {
		t.Skip("set SHARDKV_CATCHUP_MB=10,100,500 to measure")
	}
	for _, s := range strings.Split(sizes, ",") {
		mb, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("%dMB", mb), func(t *testing.T) { catchUp(t, mb) })
	}
}

func catchUp(t *testing.T, mb int) {
	h := start(t, cluster.Options{Groups: 1, TuneRaft: func(c *raftnode.Config) { c.SnapshotEntries, c.CatchUpEntries = 1000, 100 }})
	h.join(1)
	value := strings.Repeat("x", 64<<10)
	n := mb << 20 / len(value)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			cl := h.client()
			for i := w; i < n; i += 8 {
				h.put(cl, fmt.Sprintf("load%06d", i), value)
			}
		})
	}
	wg.Wait()
	probe := func(d time.Duration) (p50, p99 time.Duration) {
		cl := h.client()
		var lats []time.Duration
		for end := time.Now().Add(d); time.Now().Before(end); {
			s := time.Now()
			h.put(cl, "probe", "v")
			lats = append(lats, time.Since(s))
		}
		slices.Sort(lats)
		return lats[len(lats)/2], lats[len(lats)*99/100]
	}
	b50, b99 := probe(2 * time.Second)
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Minute)
	defer cancel()
	type result struct{ p50, p99 time.Duration }
	during := make(chan result, 1)
	stop := make(chan struct{})
	go func() {
		cl := h.client()
		var lats []time.Duration
		for {
			select {
			case <-stop:
				slices.Sort(lats)
				if len(lats) == 0 {
					lats = []time.Duration{0}
				}
				during <- result{lats[len(lats)/2], lats[len(lats)*99/100]}
				return
			default:
			}
			s := time.Now()
			h.put(cl, "probe", "v")
			lats = append(lats, time.Since(s))
		}
	}()
	start := time.Now()
	r, err := h.c.AddReplica(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.ChangeMembership(ctx, 1, raftnode.MemberChange{Kind: raftnode.Promote, ID: r.ID}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	close(stop)
	d := <-during
	t.Logf("group data %d MB (%d values of 64 KiB): learner caught up (promotable) in %v; foreground put p50/p99 %v/%v before, %v/%v while catching up",
		mb, n, took.Round(time.Millisecond), b50.Round(time.Microsecond), b99.Round(time.Microsecond), d.p50.Round(time.Microsecond), d.p99.Round(time.Microsecond))
}
