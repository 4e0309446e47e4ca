package raftnode

import "github.com/shardkv/shardkv/api/rpcerr"

// The errors are defined in package rpcerr (so that clients need no
// server code); these are the same values.
var (
	ErrStopped         = rpcerr.ErrStopped
	ErrStoppedInFlight = rpcerr.ErrStoppedInFlight
	ErrProposalDropped = rpcerr.ErrProposalDropped
	ErrLeaderChanged   = rpcerr.ErrLeaderChanged
	ErrNotLeader       = rpcerr.ErrNotLeader
	ErrReadTimeout     = rpcerr.ErrReadTimeout

	// The refusals of ChangeMembership.
	ErrMembershipChangeInProgress = rpcerr.ErrMembershipChangeInProgress
	ErrUnknownMember              = rpcerr.ErrUnknownMember
	ErrMemberExists               = rpcerr.ErrMemberExists
	ErrNotLearner                 = rpcerr.ErrNotLearner
	ErrLearnerBehind              = rpcerr.ErrLearnerBehind
	ErrWouldLoseQuorum            = rpcerr.ErrWouldLoseQuorum
	ErrBadMemberAddr              = rpcerr.ErrBadMemberAddr
	ErrBadMemberChange            = rpcerr.ErrBadMemberChange
)

// NotLeaderError is returned by Propose on a member that knows no leader
// (see rpcerr.NotLeaderError).
type NotLeaderError = rpcerr.NotLeaderError

// CertainlyNotApplied reports whether err proves that a proposal was not
// and will never be applied (see rpcerr.CertainlyNotApplied).
func CertainlyNotApplied(err error) bool { return rpcerr.CertainlyNotApplied(err) }
