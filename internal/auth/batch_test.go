package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
)

// TestBatchChecksEveryOp: the ops of a KV.Batch are checked one by one as
// the Get or Write each stands for; the handler sees only those allowed,
// in order, as the caller, and each refused op is answered with its own
// refusal, never failing the others.
func TestBatchChecksEveryOp(t *testing.T) {
	v, _ := testView(t)
	g := NewGuard(GuardConfig{View: func() *View { return v }, Logger: slog.New(slog.DiscardHandler)})
	interceptor := g.unaryInterceptor()
	get := func(k string) *kvpb.BatchOp {
		return &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: []byte(k)}}}
	}
	put := func(k string) *kvpb.BatchOp {
		return &kvpb.BatchOp{Op: &kvpb.BatchOp_Write{Write: &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte(k)}}}
	}
	req := &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{get("a/1"), put("a/1"), {}, get("zz")}}
	info := &grpc.UnaryServerInfo{FullMethod: batchMethod}

	// "reader" (by its certificate) may read everything and write nothing.
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "reader-cert"}}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}})
	var seen []*kvpb.BatchOp
	handler := func(ctx context.Context, req any) (any, error) {
		if u := User(ctx); u != "reader" {
			t.Errorf("the handler runs as %q, want reader", u)
		}
		seen = req.(*kvpb.BatchRequest).GetOps()
		reply := &kvpb.BatchReply{}
		for i := range seen {
			reply.Results = append(reply.Results, &kvpb.BatchResult{Result: &kvpb.BatchResult_Get{Get: &kvpb.GetReply{Version: uint64(i + 1)}}})
		}
		return reply, nil
	}
	r, err := interceptor(ctx, req, info, handler)
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 || seen[0] != req.Ops[0] || seen[1] != req.Ops[2] || seen[2] != req.Ops[3] {
		t.Fatalf("the handler got %v, want ops 0, 2 and 3", seen)
	}
	results := r.(*kvpb.BatchReply).GetResults()
	if len(results) != 4 {
		t.Fatalf("%d results for 4 ops", len(results))
	}
	for i, want := range map[int]uint64{0: 1, 2: 2, 3: 3} {
		if got := results[i].GetGet().GetVersion(); got != want || results[i].Err() != nil {
			t.Errorf("op %d: the handler's result %d, error %v; want result %d", i, got, results[i].Err(), want)
		}
	}
	if err := results[1].Err(); !errors.Is(rpcerr.Auth.FromStatus(err), rpcerr.ErrPermissionDenied) {
		t.Errorf("a reader's put in a batch: %v, want ErrPermissionDenied", err)
	}

	// Without credentials every op is refused, and the handler not called.
	seen = nil
	r, err = interceptor(context.Background(), req, info, handler)
	if err != nil {
		t.Fatal(err)
	}
	if seen != nil {
		t.Error("the handler was called for a batch of refused ops")
	}
	for i, res := range r.(*kvpb.BatchReply).GetResults() {
		if err := res.Err(); !errors.Is(rpcerr.Auth.FromStatus(err), rpcerr.ErrAuthFailed) {
			t.Errorf("op %d without credentials: %v, want ErrAuthFailed", i, err)
		}
	}
}

// TestOversizedBatchRefusedBeforeChecks: a batch over kvpb.MaxBatchOps is
// refused whole, as malformed, before any of its ops is checked: each
// check costs, and a request of empty ops would otherwise buy a refusal
// each (millions of them in one message).
func TestOversizedBatchRefusedBeforeChecks(t *testing.T) {
	v, _ := testView(t)
	g := NewGuard(GuardConfig{View: func() *View { return v }, Logger: slog.New(slog.DiscardHandler)})
	req := &kvpb.BatchRequest{Ops: make([]*kvpb.BatchOp, kvpb.MaxBatchOps+1)}
	for i := range req.Ops {
		req.Ops[i] = &kvpb.BatchOp{}
	}
	called := false
	_, err := g.unaryInterceptor()(context.Background(), req, &grpc.UnaryServerInfo{FullMethod: batchMethod},
		func(context.Context, any) (any, error) { called = true; return &kvpb.BatchReply{}, nil })
	if !errors.Is(kvpb.Errors.FromStatus(err), rpcerr.ErrMalformed) || called {
		t.Fatalf("a batch of %d ops: %v (handler called: %v), want MALFORMED before any check", len(req.Ops), err, called)
	}
}
