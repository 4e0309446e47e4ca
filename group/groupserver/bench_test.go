package groupserver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/internal/memnet"
	"github.com/shardkv/shardkv/storage"
)

// startAlone starts replica 1 of group 1, the group's only member (see
// startGroup).
func startAlone(tb testing.TB) *Server { return startGroup(tb, memnet.New(1), 1)[0] }

// startGroup starts replicas 1..size of group 1, each on its own Pebble
// engine (real fsync), over net, serving all 8 shards of configuration 1
// (no controller), with metrics as a server process has them; the first
// replica returned is the leader.
func startGroup(tb testing.TB, net *memnet.Network, size int) []*Server {
	tb.Helper()
	var peers []uint64
	for id := 1; id <= size; id++ {
		peers = append(peers, uint64(id))
	}
	var servers []*Server
	for _, id := range peers {
		e, err := storage.OpenWith(tb.TempDir(), storage.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			tb.Fatal(err)
		}
		s, err := Start(Config{GID: 1, ID: id, ClusterID: 1, Peers: peers, Engine: e, Network: net,
			Logger: slog.New(slog.DiscardHandler), Metrics: NewMetrics(prometheus.NewRegistry(), 1, id)})
		if err != nil {
			e.Close()
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Stop(); e.Close() })
		servers = append(servers, s)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if i := slices.IndexFunc(servers, func(s *Server) bool { return s.node.Status().IsLeader }); i >= 0 {
			servers[0], servers[i] = servers[i], servers[0]
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("no leader")
		}
	}
	c := controller.Config{Num: 1, Shards: make([]uint64, 8), Groups: map[uint64][]string{1: {"g1"}}}
	for i := range c.Shards {
		c.Shards[i] = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := servers[0].propose(ctx, &grouppb.Command{Op: &grouppb.Command_Install{Install: &grouppb.InstallConfig{Config: c.ToProto()}}}); err != nil {
		tb.Fatal(err)
	}
	return servers
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// closedLoop runs b.N calls of op over conc goroutines (op(c, n): client
// c's nth call, from 1), reporting allocations and cpu-ns/op: the whole
// process's CPU time (Pebble's and the GC's included) per call.
func closedLoop(b *testing.B, conc int, op func(c int, n uint64, i int64) error) {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime(b)
	for c := range conc {
		wg.Go(func() {
			for n := uint64(1); ; n++ {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				if err := op(c, n, i); err != nil {
					failed.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "cpu-ns/op")
}

// atClients runs bench at 1 and 64 concurrent clients, each run a
// sub-benchmark against a new one-member group.
func atClients(b *testing.B, bench func(b *testing.B, s *Server, conc int)) {
	for _, conc := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", conc), func(b *testing.B) { bench(b, startAlone(b), conc) })
	}
}

func benchKeys() [][]byte {
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%04d", i)
	}
	return keys
}

// BenchmarkServerWrite: puts of 100-byte values on 1,000 keys through a
// replica's KV handler (Server.Write), each client with its own session,
// closed loop: the request's checks, the batcher, the proposal's encoding,
// raft on a one-member group (append and fsync), apply, and the reply's
// encoding (as gRPC would send it). gRPC itself is not included.
func BenchmarkServerWrite(b *testing.B) {
	atClients(b, func(b *testing.B, s *Server, conc int) {
		ctx := context.Background()
		value := make([]byte, 100)
		keys := benchKeys()
		shardKey := map[int][]byte{} // a key of each shard: sessions are per shard
		for _, k := range keys {
			shardKey[controller.ShardOf(k, 8)] = k
		}
		for c := range conc {
			for _, k := range shardKey {
				if _, err := s.Write(ctx, &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_OPEN_SESSION, Key: k, ClientId: uint64(c) + 1}); err != nil {
					b.Fatal(err)
				}
			}
		}
		closedLoop(b, conc, func(c int, seq uint64, i int64) error {
			reply, err := s.Write(ctx, &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: keys[i%int64(len(keys))], Value: value,
				ClientId: uint64(c) + 1, Seq: seq})
			if err == nil {
				_, err = proto.Marshal(reply)
			}
			return err
		})
	})
}

// BenchmarkServerGet: linearizable gets of 1,000 keys holding 100-byte
// values through a replica's KV handler (Server.Get), closed loop: the
// checks, the read index (shared by concurrent gets), the read, and the
// reply's encoding.
func BenchmarkServerGet(b *testing.B) {
	atClients(b, func(b *testing.B, s *Server, conc int) {
		ctx := context.Background()
		keys := benchKeys()
		for _, k := range keys {
			if _, err := s.Write(ctx, &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: k, Value: make([]byte, 100)}); err != nil {
				b.Fatal(err)
			}
		}
		closedLoop(b, conc, func(_ int, _ uint64, i int64) error {
			reply, err := s.Get(ctx, &kvpb.GetRequest{Key: keys[i%int64(len(keys))]})
			if err == nil && !reply.GetFound() {
				err = fmt.Errorf("key %q not found", keys[i%int64(len(keys))])
			}
			if err == nil {
				_, err = proto.Marshal(reply)
			}
			return err
		})
	})
}
