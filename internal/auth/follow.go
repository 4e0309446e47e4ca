package auth

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/internal/rpc"
)

// Holder holds the View a process enforces: nil until it is first set.
// A controller replica sets it from its own applied state (ctlserver); a
// group process from the controller's, by Follow.
type Holder struct {
	v atomic.Pointer[View]
	// lease, when not zero, is how long the view counts as current after
	// the controller last confirmed it (RequireConfirmation); confirmed is
	// when it last did (nil: never, as for a view loaded from disk).
	lease     atomic.Int64
	confirmed atomic.Pointer[time.Time]
}

// Lease is how long a group process enforces an auth state the controller
// has not confirmed: with auth enabled, once its last confirmation is
// older, it refuses every call but a peer's as Unavailable (retryable),
// rather than enforcing a state that may have revoked a user since. A
// follower confirms at least every controllerpb.WatchLimit (10 s; the long
// poll answers before its caller's deadline), so only a group cut off from
// every controller replica for longer reaches it.
const Lease = 30 * time.Second

// RequireConfirmation makes the view held count as current only within
// lease of the controller's last confirmation (Confirm, which Follow calls
// after every successful poll); a view set without one, such as a state
// loaded from disk at a restart, is unconfirmed until the first poll
// succeeds. A group process requires it; a controller replica, which
// enforces its own applied state, does not.
func (h *Holder) RequireConfirmation(lease time.Duration) { h.lease.Store(int64(lease)) }

// Confirm records that the controller confirmed the view at now (the view
// of its answer is held, or a later one).
func (h *Holder) Confirm(now time.Time) { h.confirmed.Store(&now) }

// Unconfirmed reports whether the view held is not current at now: a
// confirmation is required (RequireConfirmation) and the last one is
// older than its lease, or there was none.
func (h *Holder) Unconfirmed(now time.Time) bool {
	lease := time.Duration(h.lease.Load())
	if lease == 0 {
		return false
	}
	at := h.confirmed.Load()
	return at == nil || now.Sub(*at) > lease
}

// View returns the view held (nil before the first Set).
func (h *Holder) View() *View { return h.v.Load() }

// Set holds the view of r, unless one of the same or a later revision is
// held already (a view is compiled once per revision); it reports whether
// it did.
func (h *Holder) Set(r *controllerpb.AuthStateReply) bool {
	for {
		old := h.v.Load()
		if old != nil && old.Revision >= r.GetRevision() {
			return false
		}
		if h.v.CompareAndSwap(old, NewView(r)) {
			return true
		}
	}
}

// Poll asks the controller for its public auth state: at once when wait is
// false, else once its revision is above after (or when the long poll's
// limit passes). ctlclient.Client.AuthState is one.
type Poll func(ctx context.Context, after uint64, wait bool) (*controllerpb.AuthStateReply, error)

// Follow keeps h up to date with the controller's auth state until ctx
// ends: one immediate poll, then long polls, each answered as soon as a
// controller replica applies a change. A revocation therefore takes effect
// on the group within the controller's answer and one round trip of its
// commit (RevocationBound, in practice milliseconds), while the group
// reaches any controller replica. Every successful poll, changed or not,
// confirms the view (Holder.Confirm): a group cut off from every
// controller replica for longer than its Lease refuses its callers
// (Unavailable) instead of enforcing a state it cannot confirm.
//
// learned, if not nil, is told of every new state (the process saves it,
// to enforce it from the moment it restarts, without waiting for a
// controller).
func Follow(ctx context.Context, h *Holder, poll Poll, learned func(*controllerpb.AuthStateReply), log *slog.Logger) {
	b := rpc.NewBackoff(50*time.Millisecond, time.Second)
	for ctx.Err() == nil {
		var after uint64
		v := h.View()
		if v != nil {
			after = v.Revision
		}
		r, err := poll(ctx, after, v != nil)
		if err != nil {
			if ctx.Err() == nil {
				log.Debug("auth state poll failed", "err", err)
			}
			_ = rpc.Wait(ctx, b)
			continue
		}
		b.Reset()
		if h.Set(r) && learned != nil {
			learned(r)
		}
		h.Confirm(time.Now())
	}
}

// RevocationBound is the documented bound on how long after a change of
// the auth state is committed a group still enforces the old one (while it
// reaches a controller replica): a follower's poll fails over to another
// controller replica within about a second (the long poll confirms its
// replica is current every half second), and the answer comes at once.
const RevocationBound = 2 * time.Second
