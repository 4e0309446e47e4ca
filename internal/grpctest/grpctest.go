// Package grpctest serves gRPC services on loopback for tests: a fake
// controller, a fake replica, whatever a test needs to answer in place of
// a real server.
package grpctest

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

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

// Stopped plays a stopped server (a SIGSTOPped process, whose kernel
// still accepts connections and requests): a fake's handler calls Hang,
// which never answers. It records the deadline budget each call came
// with, which tells a test how long the client was willing to wait.
type Stopped struct {
	mu      sync.Mutex
	budgets []time.Duration
}

// Hang records the time left before ctx's deadline and blocks until ctx
// ends, returning its error.
func (s *Stopped) Hang(ctx context.Context) error {
	d, _ := ctx.Deadline()
	s.mu.Lock()
	s.budgets = append(s.budgets, time.Until(d))
	s.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// Budgets returns the deadline budget of every call Hang took so far, in
// order of arrival.
func (s *Stopped) Budgets() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.budgets)
}
