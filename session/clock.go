package session

import (
	"log/slog"
	"sync"
	"time"
)

// Replicated time
//
// Sessions expire by replicated time: milliseconds carried in each log
// command (its stamp) and applied in log order, so every replica expires
// the same sessions at the same point of the log. A wall-clock step on the
// leader must not decide correctness (etcd-io/etcd#6700: a leader whose
// clock jumped expired every lease), so
//
//   - the state machines never let replicated time go backwards: they apply
//     max(last applied time, stamp) (see Advance);
//   - a leader's stamps start from the last applied time and advance by the
//     leader's monotonic clock, never by its wall clock (Clock.Stamp). The
//     wall clock is only compared, to warn an operator.
//
// Replicated time therefore runs no faster than real time on any leader
// and stands still while no leader proposes: a session lives at least its
// TTL of real time.

// Advance returns the replicated time after applying a command stamped
// stamp at replicated time now: it never goes backwards.
func Advance(now, stamp int64) int64 { return max(now, stamp) }

// TimeSource is what a Clock reads: the wall clock, only to warn when it
// disagrees, and a monotonic clock that time advances by. Tests inject one
// whose wall clock they step.
type TimeSource interface {
	// Wall is the wall-clock time. A new state machine's replicated time
	// starts from it; after that it is only compared with replicated
	// time, to warn of skew.
	Wall() time.Time
	// Monotonic is the time elapsed since some fixed instant; it never
	// goes backwards and is not affected by wall-clock steps.
	Monotonic() time.Duration
}

type systemTime struct{ start time.Time }

func (s systemTime) Wall() time.Time { return time.Now() }

// Monotonic uses Go's monotonic clock reading (time.Since subtracts the
// monotonic readings of both instants).
func (s systemTime) Monotonic() time.Duration { return time.Since(s.start) }

// SystemTime is the machine's clocks.
func SystemTime() TimeSource { return systemTime{start: time.Now()} }

// MaxWallSkew is how far a leader's wall clock may drift from replicated
// time, beyond the offset it had when the leader anchored, before Clock
// warns.
const MaxWallSkew = time.Second

// Clock makes a leader's stamps (unix milliseconds of replicated time).
// It is safe for concurrent use.
type Clock struct {
	src TimeSource
	log *slog.Logger

	mu         sync.Mutex
	anchored   bool
	base       int64         // replicated time at the anchor, ms
	anchor     time.Duration // src.Monotonic() at the anchor
	wallOffset int64         // wall - replicated time when last reported, ms
}

// NewClock returns a Clock reading src (SystemTime if nil), warning on log
// (slog.Default if nil).
func NewClock(src TimeSource, log *slog.Logger) *Clock {
	if src == nil {
		src = SystemTime()
	}
	if log == nil {
		log = slog.Default()
	}
	return &Clock{src: src, log: log}
}

// Stamp returns the stamp for a command proposed now, given applied, the
// replicated time this replica has applied. The first stamp of a Clock
// (or one after a replica applied a later time than this Clock would
// give, such as a stamp of another leader) starts from applied; later
// stamps add the monotonic time elapsed since. Stamps never go backwards.
// A new state machine (applied 0) starts from the wall clock. It logs a
// warning whenever the wall clock moved more than MaxWallSkew against
// replicated time since the last warning (or the anchor).
func (c *Clock) Stamp(applied int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	mono := c.src.Monotonic()
	now := c.base + (mono - c.anchor).Milliseconds()
	wall := c.src.Wall().UnixMilli()
	if !c.anchored || applied > now {
		now = applied
		if applied == 0 {
			now = wall // a new state machine: replicated time starts at the wall clock
		}
		first := !c.anchored
		c.anchored, c.base, c.anchor = true, now, mono
		if first {
			c.wallOffset = wall - now
			c.log.Info("replicated time anchored", "replicated", time.UnixMilli(now).UTC().Format(time.RFC3339Nano),
				"behind_wall", time.Duration(c.wallOffset)*time.Millisecond)
		}
	}
	offset := wall - now
	if d := offset - c.wallOffset; d > MaxWallSkew.Milliseconds() || d < -MaxWallSkew.Milliseconds() {
		c.log.Warn("wall clock disagrees with replicated time; sessions expire by replicated time",
			"wall", time.UnixMilli(wall).UTC().Format(time.RFC3339Nano),
			"replicated", time.UnixMilli(now).UTC().Format(time.RFC3339Nano),
			"change", time.Duration(d)*time.Millisecond)
		c.wallOffset = offset
	}
	return now
}
