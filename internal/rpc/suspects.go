package rpc

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SuspectFor is how long a replica that let an attempt time out is tried
// after the others: about an election and a half (raftnode's election
// timeout is 250-500 ms), long enough for its group to elect someone
// else, short enough that a replica that was only slow is soon used
// again. A success through it clears it at once.
const SuspectFor = 3 * time.Second

// SettleAfter is how long after a destination was suspected the others'
// word for it is believed again: about two election timeouts. A stopped
// leader's followers name it until they elect another (raftnode's
// election timeout is 250-500 ms); followers that still name it after
// that have heard from it since (with CheckQuorum and PreVote they would
// have elected someone else), so it was only slow.
const SettleAfter = time.Second

// Suspects remembers which destinations recently let an attempt time out
// (a stopped process, a cut network: the kernel or nobody answers, only a
// deadline notices), so that callers try them last. Without it a stopped
// leader costs every request a full attempt until a new leader is
// learned; with it, one attempt per Suspects. The zero value is ready;
// it is safe for concurrent use.
type Suspects struct {
	mu    sync.Mutex
	until map[string]time.Time // suspected until
	since map[string]time.Time // suspected since (this time round)
}

// TimedOut records that addr let an attempt time out.
func (s *Suspects) TimedOut(addr string) {
	s.mu.Lock()
	if s.until == nil {
		s.until, s.since = map[string]time.Time{}, map[string]time.Time{}
	}
	if _, ok := s.until[addr]; !ok || !time.Now().Before(s.until[addr]) {
		s.since[addr] = time.Now()
	}
	s.until[addr] = time.Now().Add(SuspectFor)
	s.mu.Unlock()
}

// Answered clears addr's suspicion: it answered an attempt.
func (s *Suspects) Answered(addr string) {
	s.mu.Lock()
	delete(s.until, addr)
	delete(s.since, addr)
	s.mu.Unlock()
}

// Settled reports whether addr has been suspected for SettleAfter: a
// leader the others still name then is believed alive (see SettleAfter).
func (s *Suspects) Settled(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	return now.Before(s.until[addr]) && now.Sub(s.since[addr]) >= SettleAfter
}

// Suspected reports whether addr let an attempt time out in the last
// SuspectFor and has not answered since.
func (s *Suspects) Suspected(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Now().Before(s.until[addr])
}

// Pick returns the index in addrs of the destination to try when the
// caller wants addrs[want]: want itself unless it is suspected; then the
// first destination after it that is neither suspected nor excluded by
// skip (nil: none); if there is none but some destination is not
// suspected (skip excluded it: tried already), -1, and the caller decides
// (wait and start over, or try the suspect as a last resort); if all are
// suspected, want.
func (s *Suspects) Pick(addrs []string, want int, skip func(i int) bool) int {
	if !s.Suspected(addrs[want]) {
		return want
	}
	healthy := false
	for k := 1; k < len(addrs); k++ {
		i := (want + k) % len(addrs)
		if s.Suspected(addrs[i]) {
			continue
		}
		if skip == nil || !skip(i) {
			return i
		}
		healthy = true
	}
	if healthy {
		return -1
	}
	return want
}

// AttemptTimedOut reports whether an attempt made with attempt, a context
// derived from call, ended (with err) because the destination did not
// answer in time: attempt's deadline passed, or the server gave up on
// the deadline it was sent (DeadlineExceeded can come back a moment
// before the caller's own timer fires), while call itself goes on.
//
// Only an attempt whose deadline comes before call's counts: otherwise the
// deadline that passed is the caller's own, which says nothing of the
// destination.
func AttemptTimedOut(call, attempt context.Context, err error) bool {
	if call.Err() != nil || err == nil {
		return false
	}
	ad, ok := attempt.Deadline()
	if !ok {
		return false
	}
	if cd, ok := call.Deadline(); ok && !ad.Before(cd) {
		return false
	}
	return errors.Is(attempt.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}
