package controller

import (
	"errors"

	"github.com/shardkv/shardkv/session"
)

// Errors a caller can branch on. Each is a deterministic refusal: the
// command changes nothing, and a retry of it gets the same error.
var (
	ErrNotInitialized = errors.New("controller: not initialized (no shard count yet)")
	ErrInvalidGroup   = errors.New("controller: invalid group")
	ErrGroupExists    = errors.New("controller: group already joined with other addresses")
	ErrUnknownGroup   = errors.New("controller: unknown group")
	ErrUnknownShard   = errors.New("controller: unknown shard")
	ErrWouldOrphan    = errors.New("controller: leaving every group would orphan their data (use force)")
	ErrInvalidShards  = errors.New("controller: shard count must be between 1 and 4096")
	ErrStaleRequest   = errors.New("controller: request older than the client's last applied one")
)

// codes give each refusal a stable number for the session table on disk.
var codes = session.Outcomes{nil, ErrNotInitialized, ErrInvalidGroup, ErrGroupExists, ErrUnknownGroup,
	ErrUnknownShard, ErrWouldOrphan, ErrInvalidShards, ErrStaleRequest}

func errorCode(err error) uint32 { return codes.Code(err) }

func codeError(code uint32) error { return codes.Err(code) }
