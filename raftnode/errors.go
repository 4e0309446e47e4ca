package raftnode

import (
	"errors"
	"fmt"
)

var (
	// ErrStopped is returned by every call on a stopped node.
	ErrStopped = errors.New("raftnode: stopped")
	// ErrProposalDropped means the proposal was certainly not applied: Raft
	// refused it, or another entry took its place in the log. Retrying is
	// safe.
	ErrProposalDropped = errors.New("raftnode: proposal dropped")
	// ErrLeaderChanged means this node lost leadership while the proposal
	// was pending. The entry may still be applied by the new leader: the
	// outcome is unknown.
	ErrLeaderChanged = errors.New("raftnode: leader changed, outcome unknown")
	// ErrNotLeader is matched by every *NotLeaderError.
	ErrNotLeader = errors.New("raftnode: not the leader")
	// ErrReadTimeout means no read index could be confirmed in time (no
	// leader, or no quorum).
	ErrReadTimeout = errors.New("raftnode: read index not confirmed")
)

// NotLeaderError is returned by Propose on a follower. Leader is the member
// this node believes leads (0 when it knows of none).
type NotLeaderError struct {
	Leader uint64
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return "raftnode: not the leader (no leader known)"
	}
	return fmt.Sprintf("raftnode: not the leader (leader is %d)", e.Leader)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
