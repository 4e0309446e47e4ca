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
)

// codes give each refusal a stable number for the session table on disk.
var codes = session.Outcomes{nil, ErrNotInitialized, ErrInvalidGroup, ErrGroupExists, ErrUnknownGroup,
	ErrUnknownShard, ErrWouldOrphan, ErrInvalidShards, ErrStaleRequest}

func errorCode(err error) uint32 { return codes.Code(err) }

// Refusal reports whether err is a deterministic refusal of a change (see
// controllerpb.Refusal).
func Refusal(err error) bool { return controllerpb.Refusal(err) }

func codeError(code uint32) error { return codes.Err(code) }
