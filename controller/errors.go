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
	// ErrSessionExpired: the controller does not know the request's
	// session (expired, or never seen) and its sequence number is not the
	// first, so it may retry a change applied before the session expired.
	// Nothing was applied by this request; open a new session.
	ErrSessionExpired = errors.New("controller: session expired")
	// ErrMalformed: the command could not be decoded or names no change.
	// Nothing was applied.
	ErrMalformed = errors.New("controller: malformed command")
)

// codes give each refusal a stable number for the session table on disk.
var codes = session.Outcomes{nil, ErrNotInitialized, ErrInvalidGroup, ErrGroupExists, ErrUnknownGroup,
	ErrUnknownShard, ErrWouldOrphan, ErrInvalidShards, ErrStaleRequest}

func errorCode(err error) uint32 { return codes.Code(err) }

// Refusal reports whether err is a deterministic refusal of a change by
// the state machine: the definitive outcome of the request, the same on
// every retry.
func Refusal(err error) bool { return codes.Code(err) != 0 && !errors.Is(err, ErrStaleRequest) }

func codeError(code uint32) error { return codes.Err(code) }
