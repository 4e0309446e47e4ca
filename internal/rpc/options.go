package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/internal/dataformat"
)

// MaxMessageBytes is the largest gRPC message any shardkv server receives
// or any shardkv connection sends, set explicitly on both sides (gRPC's
// default receive limit is 4 MiB, below what a raft batch or a pulled
// chunk may reach). Every sender bounds what it puts in one message well
// below it: raft batches (maxBatchBytes), snapshot chunks, pulled shard
// chunks, and client values (the group's limits).
const MaxMessageBytes = 16 << 20

// Keepalive. Real partitions drop packets and close nothing: a TCP
// connection to a silent peer sits in retransmission backoff (26 s and
// more) unless something gives up on it. gRPC sets TCP_USER_TIMEOUT to the
// keepalive timeout, so the kernel aborts a connection whose sent data is
// not acknowledged within DeadPeerTimeout; with raft heartbeats flowing
// every 50 ms, and client requests, a silent peer is noticed within about
// that long. Idle connections are pinged (gRPC lets clients ping no more
// often than every 10 s; servers ping idle clients every DeadPeerTimeout).
const (
	DeadPeerTimeout   = 2 * time.Second
	clientPingEvery   = 10 * time.Second // gRPC's minimum for clients
	serverPingEvery   = DeadPeerTimeout
	minClientPingTime = 5 * time.Second // what servers allow clients
)

// DialOptions are the gRPC dial options every shardkv connection uses
// unless told otherwise: plaintext, message limits of MaxMessageBytes,
// keepalive (see DeadPeerTimeout), and reconnection backoff capped at one
// second. gRPC's default cap is two minutes, which would leave a client
// talking to a dead address long after the replica behind it restarted.
// extra options come last and win.
func DialOptions(extra ...grpc.DialOption) []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: clientPingEvery, Timeout: DeadPeerTimeout, PermitWithoutStream: true}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
		grpc.WithStaticStreamWindowSize(streamWindow),
		grpc.WithStaticConnWindowSize(connWindow),
	}, extra...)
}

// ServerOptions are the options of every shardkv gRPC server: message
// limits of MaxMessageBytes, keepalive pings of idle clients and the
// matching enforcement policy (see DeadPeerTimeout), and a Stop that
// waits for the handlers running. extra options come last.
func ServerOptions(extra ...grpc.ServerOption) []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: serverPingEvery, Timeout: DeadPeerTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minClientPingTime, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.StaticStreamWindowSize(streamWindow),
		grpc.StaticConnWindowSize(connWindow),
		// Serve requests on long-lived worker goroutines rather than a new
		// goroutine each: a fresh goroutine's stack grows (and is copied)
		// on every request that reaches Pebble, which cost a fifth of a
		// group leader's CPU under a get load. Requests beyond the workers
		// still get their own goroutine.
		grpc.NumStreamWorkers(streamWorkers),
		// Stop returns once every handler has returned (Stop cancels
		// their contexts): what a process closes after its server stops,
		// its engine first, is never used by a request still running (a
		// List in flight read a closed Pebble and panicked).
		grpc.WaitForHandlers(true),
	}, extra...)
}

// streamWindow and connWindow are the HTTP/2 flow-control windows of
// every stream and connection, fixed. gRPC's default grows them by
// estimating the bandwidth-delay product, which costs a PING, a
// WINDOW_UPDATE and the peer's PING ACK on nearly every message a
// connection receives: on a raft stream of small messages that was most
// of an idle process's system calls. Fixed windows send no such PING, and
// a WINDOW_UPDATE only every quarter window read. The price: one stream
// (all raft traffic between two processes is one) moves at most 2 MiB a
// round trip (TiKV's stream default; a connection sixteen of them), which
// on a LAN is far above what replicas need and over a 50 ms link about
// 40 MiB/s.
const (
	streamWindow = 2 << 20
	connWindow   = 32 << 20
)

// streamWorkers is the number of goroutines a server keeps for requests.
const streamWorkers = 64

// clusterIDKey is the gRPC metadata key that carries a cluster id, in
// requests (the sender's) and in response headers (the server's).
const clusterIDKey = "shardkv-cluster-id"

// dataFormatKey is the gRPC metadata key that carries the data format
// (internal/dataformat) of a process that states its cluster id: a peer.
const dataFormatKey = "shardkv-data-format"

// ErrClusterMismatch is the error (as a FailedPrecondition status) of a
// request from a process of another cluster.
var ErrClusterMismatch = errors.New("cluster id mismatch")

// ErrDataFormatMismatch is the error (as a FailedPrecondition status) of a
// request from a peer (a process stating its cluster id) of another data
// format: its replicas would apply their groups' logs under other rules.
var ErrDataFormatMismatch = errors.New("data format mismatch")

// WithClusterID makes every call on a connection carry the cluster id of
// the calling process, and its data format. Servers of another cluster,
// or of another data format, refuse such calls (see CheckClusterID): a
// replica pointed at the wrong peers cannot join their group, a group
// cannot pull another cluster's shards, and replicas of two data formats
// never form a group.
func WithClusterID(id uint64) []grpc.DialOption {
	v, f := strconv.FormatUint(id, 16), strconv.Itoa(dataformat.Version)
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, clusterIDKey, v, dataFormatKey, f), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, clusterIDKey, v, dataFormatKey, f), desc, cc, method, opts...)
		}),
	}
}

// CheckClusterID makes a server refuse every call that carries another
// cluster's id, or that carries a cluster id and another data format (or
// none: a peer of format 3 or earlier), with FailedPrecondition, logging
// both, and tell every caller its own id in the response header
// (ReadClusterID). Calls without an id (clients, the CLI) are served.
func CheckClusterID(id uint64, log *slog.Logger) []grpc.ServerOption {
	own, format := strconv.FormatUint(id, 16), strconv.Itoa(dataformat.Version)
	check := func(ctx context.Context, method string) error {
		_ = grpc.SetHeader(ctx, metadata.Pairs(clusterIDKey, own))
		md, _ := metadata.FromIncomingContext(ctx)
		ids := md.Get(clusterIDKey)
		for _, v := range ids {
			if v != own {
				log.Error("refused a call from another cluster", "method", method, "cluster", own, "caller_cluster", v)
				return status.Error(codes.FailedPrecondition, fmt.Sprintf("%v: this replica belongs to cluster %s, the caller to cluster %s", ErrClusterMismatch, own, v))
			}
		}
		if formats := md.Get(dataFormatKey); len(ids) > 0 && (len(formats) == 0 || formats[0] != format) {
			theirs := "3 or earlier"
			if len(formats) > 0 {
				theirs = formats[0]
			}
			log.Error("refused a call from a peer of another data format", "method", method, "format", format, "caller_format", theirs)
			return status.Error(codes.FailedPrecondition, fmt.Sprintf("%v: this process writes data format %s, the caller format %s: "+
				"one cluster runs one data format (move a cluster to a new one by backup and restore)", ErrDataFormatMismatch, format, theirs))
		}
		return nil
	}
	return checkCalls(check)
}

// checkCalls are the server options that run check before every unary
// call and at the start of every stream, refusing the call with check's
// error.
func checkCalls(check func(ctx context.Context, method string) error) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	}
}

// ReadClusterID returns the cluster id a server sent in a response header
// (see CheckClusterID); ok is false when it sent none.
func ReadClusterID(header metadata.MD) (id uint64, ok bool) {
	for _, v := range header.Get(clusterIDKey) {
		if id, err := strconv.ParseUint(v, 16, 64); err == nil {
			return id, true
		}
	}
	return 0, false
}

// IsClusterMismatch reports whether err is a server's refusal of a call
// from another cluster.
func IsClusterMismatch(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.FailedPrecondition && strings.HasPrefix(st.Message(), ErrClusterMismatch.Error())
}
