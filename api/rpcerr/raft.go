package rpcerr

import (
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/grpc/codes"
)

// Raft is the table of the errors of a raft replica and of its storage,
// which every service that proposes or reads through one returns: each
// service's table shares it (NewTable's shared), and sends them under the
// service's own domain.
var Raft = NewTable("shardkv.raft")

// NotLeaderReason is the ErrorInfo reason of ErrNotLeader's status.
const NotLeaderReason = "NOT_LEADER"

// The errors of a raft replica, which every service that proposes or reads
// through one returns. They live here, with no server code, so that clients
// branch on them without linking the servers; package raftnode returns
// these same values.
var (
	// ErrStopped is returned by every call made on a raft node that had already
	// stopped: nothing was handed to Raft, so a proposal certainly was not
	// applied.
	ErrStopped = Raft.New(codes.Unavailable, "STOPPED", "raftnode: stopped")
	// ErrStoppedInFlight is returned by Pending.Wait when the node stopped
	// after the proposal was appended to its log. The other replicas may
	// still commit and apply it: the outcome is unknown. It deliberately
	// does not match ErrStopped.
	ErrStoppedInFlight = Raft.New(codes.Unavailable, "STOPPED_IN_FLIGHT", "raftnode: stopped with the proposal in flight, outcome unknown")
	// ErrProposalDropped means the proposal was certainly not applied: Raft
	// refused it, or another entry took its place in the log. Retrying is
	// safe.
	ErrProposalDropped = Raft.New(codes.Unavailable, "DROPPED", "raftnode: proposal dropped")
	// ErrLeaderChanged means this node lost leadership while the proposal
	// was pending. The entry may still be applied by the new leader: the
	// outcome is unknown.
	ErrLeaderChanged = Raft.New(codes.Unavailable, "LEADER_CHANGED", "raftnode: leader changed, outcome unknown")
	// ErrNotLeader is matched by every *NotLeaderError.
	ErrNotLeader = Raft.add(Entry{Err: errors.New("raftnode: not the leader"), Code: codes.Unavailable, Reason: NotLeaderReason, Decode: decodeNotLeader})
	// ErrReadTimeout means no read index could be confirmed in time (no
	// leader, or no quorum).
	ErrReadTimeout = Raft.New(codes.Unavailable, "READ_TIMEOUT", "raftnode: read index not confirmed")
)

// The refusals of a membership change (raftnode's ChangeMembership), as
// etcd's strict reconfiguration check: each changes nothing.
var (
	// ErrMembershipChangeInProgress: another change is not applied yet, or
	// the group is in joint consensus.
	ErrMembershipChangeInProgress = Raft.New(codes.FailedPrecondition, "MEMBERSHIP_CHANGE_IN_PROGRESS", "raftnode: a membership change is in progress")
	// ErrUnknownMember: the member to promote, remove or replace is not in
	// the group.
	ErrUnknownMember = Raft.New(codes.NotFound, "UNKNOWN_MEMBER", "raftnode: no such member")
	// ErrMemberExists: the member to add is already in the group (or its
	// id is 0).
	ErrMemberExists = Raft.New(codes.AlreadyExists, "MEMBER_EXISTS", "raftnode: member already exists")
	// ErrNotLearner: a promotion or replacement names a member that is not
	// a learner.
	ErrNotLearner = Raft.New(codes.FailedPrecondition, "NOT_LEARNER", "raftnode: member is not a learner")
	// ErrLearnerBehind: the learner to promote has less than 90% of the
	// leader's log; try again once it caught up.
	ErrLearnerBehind = Raft.New(codes.FailedPrecondition, "LEARNER_BEHIND", "raftnode: learner has not caught up with the leader")
	// ErrWouldLoseQuorum: after a promotion, replacement or removal, fewer
	// voters than a quorum would be reachable (heard from within an
	// election timeout), or no voter would be left.
	ErrWouldLoseQuorum = Raft.New(codes.FailedPrecondition, "WOULD_LOSE_QUORUM", "raftnode: the change would leave fewer reachable voters than a quorum")
	// ErrBadMemberAddr: a new member's address is not host:port.
	ErrBadMemberAddr = Raft.New(codes.InvalidArgument, "BAD_MEMBER_ADDR", "raftnode: a new member needs a host:port address")
	// ErrMemberAddrInUse: a new member's address is another member's (a
	// node hosts one replica of a group).
	ErrMemberAddrInUse = Raft.New(codes.AlreadyExists, "MEMBER_ADDR_IN_USE", "raftnode: another member of the group has that address")
	// ErrMemberRemoved: the member to add was removed from the group once;
	// ids are never reused.
	ErrMemberRemoved = Raft.New(codes.AlreadyExists, "MEMBER_REMOVED", "raftnode: the id was a member of the group once (ids are never reused)")
	// ErrBadMemberChange: a malformed change, such as an unknown change
	// kind or the replacement of a learner (remove it instead).
	ErrBadMemberChange = Raft.New(codes.InvalidArgument, "BAD_MEMBER_CHANGE", "raftnode: malformed membership change")
)

// NotLeaderError is the refusal of a replica that is not its group's
// leader. Leader is the raft id of the member it believes leads (0 when it
// knows of none) and Addr that member's address when known: a client
// retries there directly rather than probing every replica. Both travel
// in the gRPC status details (ErrorInfo metadata "leader_id",
// "leader_addr"), so errors.As finds them on the client side.
type NotLeaderError struct {
	Leader uint64
	Addr   string
}

// Error names the leader, and its address, when they are known.
func (e *NotLeaderError) Error() string {
	switch {
	case e.Leader == 0:
		return "raftnode: not the leader (no leader known)"
	case e.Addr != "":
		return fmt.Sprintf("raftnode: not the leader (leader is %d at %s)", e.Leader, e.Addr)
	}
	return fmt.Sprintf("raftnode: not the leader (leader is %d)", e.Leader)
}

// ErrorMetadata implements MetadataError.
func (e *NotLeaderError) ErrorMetadata() map[string]string {
	if e.Leader == 0 {
		return nil
	}
	md := map[string]string{"leader_id": strconv.FormatUint(e.Leader, 10)}
	if e.Addr != "" {
		md["leader_addr"] = e.Addr
	}
	return md
}

func decodeNotLeader(md map[string]string) error {
	id, _ := strconv.ParseUint(md["leader_id"], 10, 64)
	return &NotLeaderError{Leader: id, Addr: md["leader_addr"]}
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// CertainlyNotApplied reports whether err, returned by a proposal (raftnode's
// Propose, Submit or Pending.Wait, or a service that proposes), proves that
// the proposal was not and will never be applied, so that retrying it
// cannot apply it twice. Every other error, including context errors and
// ErrStoppedInFlight, leaves the outcome unknown.
//
//	ErrNotLeader (*NotLeaderError)  certainly not applied: nothing was appended
//	ErrProposalDropped              certainly not applied: Raft refused it, or another entry took its index
//	ErrStopped                      certainly not applied: the node had stopped before Submit
//	ErrNoSpace, ErrStalled          certainly not applied: the replica refused before proposing
//	ErrAuthFailed, ErrPermissionDenied, ErrAuthNeedsTLS  certainly not applied: refused before the service saw it
//	ErrSharedPeerCA                 certainly not applied: the leader refused the enable before proposing
//	ErrStoppedInFlight              unknown: appended, then the node stopped
//	ErrLeaderChanged                unknown: appended, then leadership was lost
//	context.Canceled/DeadlineExceeded unknown
func CertainlyNotApplied(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrProposalDropped) || errors.Is(err, ErrStopped) ||
		errors.Is(err, ErrNoSpace) || errors.Is(err, ErrStalled) ||
		errors.Is(err, ErrAuthFailed) || errors.Is(err, ErrPermissionDenied) || errors.Is(err, ErrAuthNeedsTLS) ||
		errors.Is(err, ErrSharedPeerCA)
}

// Errors of a replica that cannot persist.
var (
	// ErrNoSpace: the disk is full. Writes are refused until space is
	// freed; reads go on. A write refused with it was not applied.
	ErrNoSpace = Raft.New(codes.ResourceExhausted, "NO_SPACE", "storage: no space left on device")
	// ErrStalled: a synced write has not completed for longer than the
	// engine's stall limit (a stuck or failing disk).
	ErrStalled = Raft.New(codes.Unavailable, "STORAGE_STALLED", "storage: synced write stalled")
)
