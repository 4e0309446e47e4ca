// Package grpctest serves gRPC services on loopback for tests: a fake
// controller, a fake replica, whatever a test needs to answer in place of
// a real server.
package grpctest

import (
	"net"
	"testing"

	"google.golang.org/grpc"
)

// Serve starts a gRPC server with opts on a new loopback port, with the
// services register adds, and returns its address (host:port). The server
// stops when the test or benchmark ends.
func Serve(tb testing.TB, register func(*grpc.Server), opts ...grpc.ServerOption) string {
	tb.Helper()
	return ServeAt(tb, "127.0.0.1:0", register, opts...)
}

// ServeAt is Serve on addr: a port a test picked before, such as the
// address a restarted replica had.
func ServeAt(tb testing.TB, addr string, register func(*grpc.Server), opts ...grpc.ServerOption) string {
	tb.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	register(s)
	go func() { _ = s.Serve(l) }()
	tb.Cleanup(s.Stop)
	return l.Addr().String()
}
