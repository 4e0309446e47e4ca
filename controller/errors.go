package controller

import "errors"

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
var codes = []error{nil, ErrNotInitialized, ErrInvalidGroup, ErrGroupExists, ErrUnknownGroup,
	ErrUnknownShard, ErrWouldOrphan, ErrInvalidShards, ErrStaleRequest}

func errorCode(err error) uint32 {
	for i, e := range codes {
		if i > 0 && errors.Is(err, e) {
			return uint32(i)
		}
	}
	return 0
}

func codeError(code uint32) error {
	if int(code) < len(codes) {
		return codes[code]
	}
	return errors.New("controller: unknown error code")
}
