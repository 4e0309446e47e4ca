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

// Suspects remembers which destinations recently let an attempt time out
// (a stopped process, a cut network: the kernel or nobody answers, only a
// deadline notices), so that callers try them last. Without it a stopped
// leader costs every request a full attempt until a new leader is
// learned; with it, one attempt per Suspects. The zero value is ready;
// it is safe for concurrent use.
type Suspects struct {
	mu    sync.Mutex
	until map[string]time.Time
}

// TimedOut records that addr let an attempt time out.
func (s *Suspects) TimedOut(addr string) {
	s.mu.Lock()
	if s.until == nil {
		s.until = map[string]time.Time{}
	}
	s.until[addr] = time.Now().Add(SuspectFor)
	s.mu.Unlock()
}

// Answered clears addr's suspicion: it answered an attempt.
func (s *Suspects) Answered(addr string) {
	s.mu.Lock()
	delete(s.until, addr)
	s.mu.Unlock()
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
// suspected (skip excluded it: tried already), -1, so that the caller
// waits and starts over rather than spend an attempt on a suspect; if all
// are suspected, want.
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
func AttemptTimedOut(call, attempt context.Context, err error) bool {
	if call.Err() != nil || err == nil {
		return false
	}
	return errors.Is(attempt.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}
