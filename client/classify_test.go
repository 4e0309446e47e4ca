package client

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// TestErrorClasses is the table of every error a write attempt can end with
// (as the servers' error table decodes it), whether it proves the attempt
// was not applied, and what the client does next. Anything not proven
// "not applied" makes a later failure of the write ErrUnknownOutcome.
func TestErrorClasses(t *testing.T) {
	for _, tc := range []struct {
		err           error
		notApplied    bool
		next          verdict
		deterministic bool
	}{
		{&raftnode.NotLeaderError{}, true, nextReplica, false},
		{raftnode.ErrProposalDropped, true, nextReplica, false},
		{raftnode.ErrStopped, true, nextReplica, false},
		{raftnode.ErrStoppedInFlight, false, nextReplica, false},
		{raftnode.ErrLeaderChanged, false, nextReplica, false},
		{raftnode.ErrReadTimeout, false, nextReplica, false},
		{context.DeadlineExceeded, false, nextReplica, false},
		{status.Error(codes.Unavailable, "connection refused"), false, nextReplica, false},
		{group.ErrWrongGroup, true, rereadConfig, false},
		{group.ErrStaleConfig, false, rereadConfig, false},
		{group.ErrNotReady, true, waitAndRetry, false},
		{group.ErrSessionExpired, true, final, false},
		{storage.ErrNoSpace, true, final, false},
		{storage.ErrStalled, true, nextReplica, false},
		{group.ErrKeyTooLarge, false, final, true},
		{group.ErrValueTooLarge, false, final, true},
		{tooLarge(status.Error(codes.ResourceExhausted, "grpc: received message larger than max")), false, final, true},
		{group.ErrEmptyKey, false, final, true},
		{group.ErrMalformed, false, final, true},
		{group.ErrStaleRequest, false, final, false},
	} {
		err := fmt.Errorf("attempt: %w", tc.err)
		if got := definitelyNotApplied(err); got != tc.notApplied {
			t.Errorf("definitelyNotApplied(%v) = %v, want %v", tc.err, got, tc.notApplied)
		}
		if got := classify(err); got != tc.next {
			t.Errorf("classify(%v) = %v, want %v", tc.err, got, tc.next)
		}
		if got := deterministicRefusal(err); got != tc.deterministic {
			t.Errorf("deterministicRefusal(%v) = %v, want %v", tc.err, got, tc.deterministic)
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
	err := gaveUp(ctx, fmt.Errorf("attempt: %w", group.ErrNotReady))
	if !errors.Is(err, context.Canceled) || !errors.Is(err, group.ErrNotReady) {
		t.Fatalf("%v: lost one of its causes", err)
	}
	if err := gaveUp(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("without an attempt: %v", err)
	}
}
