package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/internal/bench"
)

// benchCluster runs a cluster as production would: raft over gRPC on
// loopback, one Pebble engine (real fsync) per replica.
func benchCluster(b *testing.B, groups int) (*cluster.Cluster, *client.Client) {
	b.Helper()
	ctx := context.Background()
	c, err := cluster.Start(ctx, cluster.Options{Dir: b.TempDir(), Groups: groups, EnginePerReplica: true,
		JoinAll: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	cl, err := client.New(ctx, c.ControllerAddrs())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	// Warm up: every group has a leader and the configuration is installed.
	for i := 0; i < 64; i++ {
		if _, err := cl.Put(ctx, []byte(fmt.Sprint("warm", i)), []byte("x")); err != nil {
			b.Fatal(err)
		}
	}
	return c, cl
}

// BenchmarkClient measures puts and gets through the client against one
// group and against three: go test -run XXX -bench Client ./cluster
func BenchmarkClient(b *testing.B) {
	value := make([]byte, 100)
	for _, groups := range []int{1, 3} {
		for _, conc := range []int{16, 64, 256} {
			b.Run(fmt.Sprintf("put/groups=%d/clients=%d", groups, conc), func(b *testing.B) {
				_, cl := benchCluster(b, groups)
				bench.ReportClosedLoop(b, b.N, conc, "ops", func(i int) error {
					_, err := cl.Put(context.Background(), []byte(fmt.Sprint("key", i%10000)), value)
					return err
				})
			})
			b.Run(fmt.Sprintf("get/groups=%d/clients=%d", groups, conc), func(b *testing.B) {
				_, cl := benchCluster(b, groups)
				bench.ReportClosedLoop(b, b.N, conc, "ops", func(i int) error {
					_, err := cl.Get(context.Background(), []byte(fmt.Sprint("warm", i%64)))
					return err
				})
			})
		}
	}
}

// BenchmarkMigrate100MB moves one shard holding 100 MB between groups while
// clients keep writing to other shards, and reports how long the shard took
// to be served by its new owner.
func BenchmarkMigrate100MB(b *testing.B) {
	for i := 0; i < b.N; i++ {
		c, cl := benchCluster(b, 2)
		ctx := context.Background()
		cfg := cl.Config()
		const shard = 5
		from := cfg.Shards[shard]
		to := uint64(1)
		if from == 1 {
			to = 2
		}
		value := make([]byte, 1<<20)
		var keys []string
		for k := 0; len(keys) < 100; k++ {
			key := fmt.Sprint("big", k)
			if controller.ShardOf([]byte(key), len(cfg.Shards)) == shard {
				keys = append(keys, key)
			}
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, k := range keys {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := cl.Put(ctx, []byte(k), value); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		stop := make(chan struct{})
		var writes atomic.Int64
		for w := 0; w < 8; w++ {
			wg.Go(func() {
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					default:
					}
					key := fmt.Sprint("bg", w, "-", j)
					if controller.ShardOf([]byte(key), len(cfg.Shards)) == shard {
						continue
					}
					if _, err := cl.Put(ctx, []byte(key), []byte("x")); err == nil {
						writes.Add(1)
					}
				}
			})
		}
		ctl, err := c.ControllerClient()
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		if _, err := ctl.Move(ctx, shard, to); err != nil {
			b.Fatal(err)
		}
		for {
			served := false
			for id := uint64(1); id <= 3; id++ {
				if s := c.Group(cluster.Replica{Group: to, ID: id}); s != nil && s.Node().Status().IsLeader {
					v := s.StateMachine().View()
					served = v.Shards[shard].State == group.Serving || v.Shards[shard].State == group.Confirming
				}
			}
			if served {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		b.StopTimer()
		close(stop)
		wg.Wait()
		ctl.Close()
		b.ReportMetric(took.Seconds(), "migrate-s")
		b.ReportMetric(100/took.Seconds(), "MB/s")
		b.ReportMetric(float64(writes.Load())/took.Seconds(), "bg-writes/s")
	}
}

// BenchmarkWatchFanOut measures puts (64 clients, 100-byte values, over
// keys key0..key999) on one group while watchers follow them, in one
// process: none; 1,000, each watching one of the keys (every put goes to
// one watcher); 1,000 each watching the prefix "key" (every put goes to
// all of them: 1,000 deliveries per put, on each of the three replicas'
// streams the watchers' client picked). It reports the puts' throughput
// and the events delivered per second.
//
//	go test -run XXX -bench WatchFanOut -benchtime 20000x ./cluster
func BenchmarkWatchFanOut(b *testing.B) {
	value := make([]byte, 100)
	for _, mode := range []string{"none", "key", "prefix"} {
		b.Run("watchers="+mode, func(b *testing.B) {
			_, cl := benchCluster(b, 1)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var delivered atomic.Int64
			var wg sync.WaitGroup
			if mode != "none" {
				for w := 0; w < 1000; w++ {
					key, opts := fmt.Sprint("key", w), []client.WatchOption{client.WithCreatedNotify()}
					if mode == "prefix" {
						key, opts = "key", append(opts, client.WatchPrefix())
					}
					ch := cl.Watch(ctx, []byte(key), opts...)
					if r := <-ch; !r.Created {
						b.Fatal(r.Err())
					}
					wg.Go(func() {
						for r := range ch {
							delivered.Add(int64(len(r.Events)))
						}
					})
				}
			}
			start := time.Now()
			bench.ReportClosedLoop(b, b.N, 64, "puts", func(i int) error {
				_, err := cl.Put(context.Background(), []byte(fmt.Sprint("key", i%1000)), value)
				return err
			})
			b.ReportMetric(float64(delivered.Load())/time.Since(start).Seconds(), "events/s")
			cancel()
			wg.Wait()
		})
	}
}

// BenchmarkList lists every key of a store of 100,000 keys
// (SHARDKV_BENCH_LIST_KEYS to change it; 100-byte values, three groups of
// three, 64 shards), page after page, and reports keys/s; the load is not
// timed: go test -run XXX -bench List -benchtime 3x ./cluster
func BenchmarkList(b *testing.B) {
	n := 100_000
	if s := os.Getenv("SHARDKV_BENCH_LIST_KEYS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	c, cl := benchCluster(b, 3)
	backend, err := bench.NewShardkv(ctx, c.ControllerAddrs())
	if err != nil {
		b.Fatal(err)
	}
	defer backend.Close()
	start := time.Now()
	if err := bench.Load(ctx, backend, n, 100, 128); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d keys in %v", n, time.Since(start).Round(time.Millisecond))
	prefix := bench.Key(0)[:len("bench-")]
	for _, keysOnly := range []bool{true, false} {
		for _, limit := range []int{1000, 10000} {
			b.Run(fmt.Sprintf("keys-only=%v/page=%d", keysOnly, limit), func(b *testing.B) {
				opts := []client.ListOption{client.WithPrefix(prefix), client.WithLimit(limit)}
				if keysOnly {
					opts = append(opts, client.WithKeysOnly())
				}
				for b.Loop() {
					listed, after := 0, opts
					for {
						page, err := cl.List(ctx, after...)
						if err != nil {
							b.Fatal(err)
						}
						listed += len(page.KVs)
						if !page.More {
							break
						}
						after = append(opts[:len(opts):len(opts)], client.After(page.Next))
					}
					if listed != n {
						b.Fatalf("listed %d keys of %d", listed, n)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "keys/s")
			})
		}
	}
}
