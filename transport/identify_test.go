package transport_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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
	// A peer of this cluster is served; one that states the cluster's id
	// but no data format (a version of format 3 or earlier), or another
	// format, is refused: its replicas would apply logs under other rules.
	if _, err := transport.Identify(ctx, addr, 7, rpc.DialOptions(rpc.WithClusterID(0xc1)...)...); err != nil {
		t.Fatalf("a peer of the same format: %v", err)
	}
	for _, md := range [][]string{{"shardkv-cluster-id", "c1"}, {"shardkv-cluster-id", "c1", "shardkv-data-format", "3"}} {
		old := grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, md...), method, req, reply, cc, opts...)
		})
		_, err := transport.Identify(ctx, addr, 7, rpc.DialOptions(old)...)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "data format mismatch") {
			t.Fatalf("a peer stating %v: %v", md, err)
		}
	}
}
