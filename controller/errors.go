package controller

import (
	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/session"
)

// Errors a caller can branch on: the controller API's (see package
// controllerpb).
var (
	ErrNotInitialized = controllerpb.ErrNotInitialized
	ErrInvalidGroup   = controllerpb.ErrInvalidGroup
	ErrGroupExists    = controllerpb.ErrGroupExists
	ErrUnknownGroup   = controllerpb.ErrUnknownGroup
	ErrUnknownShard   = controllerpb.ErrUnknownShard
	ErrWouldOrphan    = controllerpb.ErrWouldOrphan
	ErrInvalidShards  = controllerpb.ErrInvalidShards
	ErrStaleRequest   = controllerpb.ErrStaleRequest
	ErrSessionExpired = controllerpb.ErrSessionExpired
	ErrMalformed      = controllerpb.ErrMalformed
	// ErrBadReplica and ErrReplicaUnreachable refuse a join whose
	// replicas failed the leader's check (see package ctlserver).
	ErrBadReplica         = controllerpb.ErrBadReplica
	ErrReplicaUnreachable = controllerpb.ErrReplicaUnreachable
)

// codes give each refusal a stable number for the session table on disk
// (append only).
var codes = session.Outcomes{nil, ErrNotInitialized, ErrInvalidGroup, ErrGroupExists, ErrUnknownGroup,
	ErrUnknownShard, ErrWouldOrphan, ErrInvalidShards, ErrStaleRequest, ErrBadReplica, ErrReplicaUnreachable}

// RefusalCode is the code a leader's verdict on a change carries in the log
// (controllerpb.Refusal): err must be ErrBadReplica or
// ErrReplicaUnreachable, possibly wrapped.
func RefusalCode(err error) uint32 { return codes.Code(err) }

func errorCode(err error) uint32 { return codes.Code(err) }

// Refusal reports whether err is a deterministic refusal of a change (see
// controllerpb.Refusal).
func Refusal(err error) bool { return controllerpb.Refusal(err) }

func codeError(code uint32) error { return codes.Err(code) }
