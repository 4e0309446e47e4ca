package rpc

import (
	"context"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NewBackoff returns exponential backoff starting near base and growing
// 1.6 times per step up to near max, each delay drawn uniformly within
// ±50% of the step (full jitter keeps many clients that failed together
// from retrying together). gRPC's own reconnection backoff uses the same
// multiplier.
func NewBackoff(base, max time.Duration) *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     base,
		RandomizationFactor: 0.5,
		Multiplier:          1.6,
		MaxInterval:         max,
	}
	b.Reset()
	return b
}

// Wait sleeps for b's next delay, or until ctx ends, in which case it
// returns ctx.Err().
func Wait(ctx context.Context, b backoff.BackOff) error {
	return Sleep(ctx, b.NextBackOff())
}

// Sleep sleeps for d, or until ctx ends, in which case it returns
// ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Refused reports whether a call failed because its destination refused
// the connection (nothing listens there): nothing was sent.
func Refused(err error) bool {
	return status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "connect: connection refused")
}
