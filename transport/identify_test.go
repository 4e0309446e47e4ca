package transport_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/transport"
)

// TestIdentify: a replica group server says which replica it is and which
// cluster it belongs to; Identify waits for a server that is starting, and
// reports why one that never starts could not be reached.
func TestIdentify(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = transport.Identify(ctx, addr, 7)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("nothing listening: %v (want the connection's failure, not the deadline)", err)
	}

	log := slog.New(slog.DiscardHandler)
	g := grpc.NewServer(rpc.ServerOptions(rpc.CheckClusterID(0xc1, log)...)...)
	transport.RegisterIdentity(g, func() map[uint64]transport.Hosted { return map[uint64]transport.Hosted{7: {Replica: 2}} })
	defer g.Stop()
	go func() {
		time.Sleep(200 * time.Millisecond) // the server starts while Identify waits
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		_ = g.Serve(l)
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, err := transport.Identify(ctx, addr, 7)
	if err != nil || id != (transport.ReplicaIdentity{ClusterID: 0xc1, Group: 7, Replica: 2}) {
		t.Fatalf("identify: %+v, %v", id, err)
	}
	// A caller of another cluster is refused.
	_, err = transport.Identify(ctx, addr, 7, rpc.DialOptions(rpc.WithClusterID(0xc2)...)...)
	if !rpc.IsClusterMismatch(err) {
		t.Fatalf("another cluster's caller: %v", err)
	}
}
