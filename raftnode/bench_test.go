package raftnode_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/internal/bench"
	"github.com/shardkv/shardkv/internal/memnet"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/transport"
)

// grpcGroup starts a group of size members, each as if in its own process:
// its own Pebble engine (real fsync), gRPC server and network on loopback.
func grpcGroup(tb testing.TB, size int) []*raftnode.Node {
	return grpcProcesses(tb, size).nodes
}

// processes are the members of a group each in a process of its own.
type processes struct {
	nodes []*raftnode.Node
	sms   []*registers
	// kill[i] kills member i's process: the member stops and its gRPC
	// server and network close, as when the process dies.
	kill []func()
}

// grpcProcesses is grpcGroup with each member's state machine and what
// kills its process.
func grpcProcesses(tb testing.TB, size int) processes {
	tb.Helper()
	addrs := map[uint64]string{}
	var lis []net.Listener
	var peers []uint64
	for i := 1; i <= size; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		lis = append(lis, l)
		addrs[uint64(i)] = l.Addr().String()
		peers = append(peers, uint64(i))
	}
	resolve := func(_, id uint64) (string, bool) { a, ok := addrs[id]; return a, ok }
	closers := make([]func(), size)
	nodes, sms := startMembers(tb, peers, func(i int) (transport.Network, func()) {
		g := grpc.NewServer(rpc.ServerOptions()...)
		srv := transport.NewServer()
		srv.Register(g)
		go func() { _ = g.Serve(lis[i]) }()
		network := transport.NewGRPCNetwork(srv, resolve)
		closers[i] = func() { network.Close(); g.Stop() }
		return network, closers[i]
	})
	p := processes{nodes: nodes, sms: sms, kill: make([]func(), size)}
	for i, n := range nodes {
		p.kill[i] = func() { n.Stop(); closers[i]() }
	}
	return p
}

// startMembers starts a member of each of peers on its own Pebble engine
// (real fsync), member i on the network network(i) returns, which its
// closer closes once the member stopped.
func startMembers(tb testing.TB, peers []uint64, network func(i int) (transport.Network, func())) ([]*raftnode.Node, []*registers) {
	tb.Helper()
	dir := tb.TempDir()
	var nodes []*raftnode.Node
	var sms []*registers
	for i, id := range peers {
		e, sm := openMember(tb, dir, id)
		nw, closeNet := network(i)
		n, err := raftnode.Start(raftnode.Config{
			Group: testGroup, ID: id, Peers: peers, Engine: e, Network: nw, StateMachine: sm,
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			tb.Fatal(err)
		}
		nodes, sms = append(nodes, n), append(sms, sm)
		tb.Cleanup(func() { n.Stop(); closeNet(); e.Close() })
	}
	return nodes, sms
}

func waitLeader(tb testing.TB, nodes []*raftnode.Node) *raftnode.Node {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.Status().IsLeader {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatal("no leader")
	return nil
}

func TestGRPCGroupAgrees(t *testing.T) {
	nodes := grpcGroup(t, 3)
	lead := waitLeader(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 50; i++ {
		if _, err := lead.Propose(ctx, encodeCmd('a', "x", "y")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range nodes {
		for n.Status().Applied < lead.Status().Applied {
			if time.Now().After(deadline) {
				t.Fatalf("member %d applied %d, leader %d", n.Status().ID, n.Status().Applied, lead.Status().Applied)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// BenchmarkPropose measures proposals through a 3-replica group over gRPC
// on loopback with real fsync: go test -run XXX -bench Propose ./raftnode
func BenchmarkPropose(b *testing.B) {
	for _, conc := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("proposers=%d", conc), func(b *testing.B) {
			nodes := grpcGroup(b, 3)
			lead := waitLeader(b, nodes)
			value := string(make([]byte, 100))
			bench.ReportClosedLoop(b, b.N, conc, "proposals", func(k int) error {
				_, err := lead.Propose(context.Background(), encodeCmd('p', fmt.Sprintf("key%d", k%1000), value))
				return err
			})
		})
	}
}

// BenchmarkReadIndex measures linearizable read rounds on the leader of a
// 3-replica group over gRPC on loopback, readers sharing rounds: go test
// -run XXX -bench ReadIndex ./raftnode. cpu-µs/op is the whole process's
// (all three members) per read.
func BenchmarkReadIndex(b *testing.B) {
	for _, conc := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprintf("readers=%d", conc), func(b *testing.B) {
			nodes := grpcGroup(b, 3)
			lead := waitLeader(b, nodes)
			bench.ReportClosedLoop(b, b.N, conc, "reads", func(int) error {
				return lead.ReadIndex(context.Background())
			})
		})
	}
}

// memGroup starts a group of size members on their own Pebble engines
// (real fsync) over an in-memory network: raft, the log and apply
// without gRPC.
func memGroup(tb testing.TB, size int) []*raftnode.Node {
	tb.Helper()
	nw := memnet.New(1)
	var peers []uint64
	for i := 1; i <= size; i++ {
		peers = append(peers, uint64(i))
	}
	nodes, _ := startMembers(tb, peers, func(int) (transport.Network, func()) { return nw, func() {} })
	return nodes
}

// BenchmarkProposeMemnet: proposals of 100-byte values through a
// 3-replica group on an in-memory network (go test -run XXX -bench
// ProposeMemnet -benchmem ./raftnode): raft, the log's append and fsync,
// and apply, per proposal; allocations are those of all three members.
func BenchmarkProposeMemnet(b *testing.B) {
	for _, conc := range []int{1, 64} {
		b.Run(fmt.Sprintf("proposers=%d", conc), func(b *testing.B) {
			nodes := memGroup(b, 3)
			lead := waitLeader(b, nodes)
			value := string(make([]byte, 100))
			cmds := make([][]byte, 1000)
			for k := range cmds {
				cmds[k] = encodeCmd('p', fmt.Sprintf("key%d", k), value)
			}
			b.ReportAllocs()
			bench.ReportClosedLoop(b, b.N, conc, "proposals", func(k int) error {
				_, err := lead.Propose(context.Background(), cmds[k%len(cmds)])
				return err
			})
		})
	}
}
