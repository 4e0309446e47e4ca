package client

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
)

// TestErrorClasses is the table of every error a write attempt can end with
// (as the servers' error table decodes it), by class: whether it proves the
// attempt was not applied, what the client does next, and whether the
// same request would always be refused again. Anything not proven
// "not applied" makes a later failure of the write ErrUnknownOutcome.
func TestErrorClasses(t *testing.T) {
	for _, class := range []struct {
		notApplied    bool
		next          verdict
		deterministic bool
		errs          []error
	}{
		{notApplied: true, next: nextReplica, errs: []error{
			&rpcerr.NotLeaderError{}, rpcerr.ErrProposalDropped, rpcerr.ErrStopped, rpcerr.ErrStalled}},
		{notApplied: false, next: nextReplica, errs: []error{
			rpcerr.ErrStoppedInFlight, rpcerr.ErrLeaderChanged, rpcerr.ErrReadTimeout, context.DeadlineExceeded,
			status.Error(codes.Unavailable, "connection refused")}},
		{notApplied: true, next: rereadConfig, errs: []error{kvpb.ErrWrongGroup}},
		{notApplied: false, next: rereadConfig, errs: []error{kvpb.ErrStaleConfig}},
		{notApplied: true, next: waitAndRetry, errs: []error{kvpb.ErrNotReady}},
		{notApplied: true, next: final, errs: []error{rpcerr.ErrSessionExpired, rpcerr.ErrNoSpace}},
		{notApplied: false, next: final, errs: []error{rpcerr.ErrStaleRequest}},
		{notApplied: false, next: final, deterministic: true, errs: []error{
			kvpb.ErrKeyTooLarge, kvpb.ErrValueTooLarge, kvpb.ErrEmptyKey, rpcerr.ErrMalformed,
			tooLarge(status.Error(codes.ResourceExhausted, "grpc: received message larger than max"))}},
	} {
		for _, e := range class.errs {
			err := fmt.Errorf("attempt: %w", e)
			if got := definitelyNotApplied(err); got != class.notApplied {
				t.Errorf("definitelyNotApplied(%v) = %v, want %v", e, got, class.notApplied)
			}
			if got := classify(err); got != class.next {
				t.Errorf("classify(%v) = %v, want %v", e, got, class.next)
			}
			if got := deterministicRefusal(err); got != class.deterministic {
				t.Errorf("deterministicRefusal(%v) = %v, want %v", e, got, class.deterministic)
			}
		}
	}
	if !errors.Is(tooLarge(status.Error(codes.ResourceExhausted, "x")), ErrValueTooLarge) {
		t.Error("a receive-limit refusal is not ErrValueTooLarge")
	}
}

// TestGaveUpKeepsBothErrors: an operation that runs out of time reports
// the context's error and the last attempt's, both matchable.
func TestGaveUpKeepsBothErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := gaveUp(ctx, fmt.Errorf("attempt: %w", kvpb.ErrNotReady))
	if !errors.Is(err, context.Canceled) || !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("%v: lost one of its causes", err)
	}
	if err := gaveUp(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("without an attempt: %v", err)
	}
}
