package group

import (
	"errors"

	"github.com/shardkv/shardkv/session"
)

// Errors a caller can branch on.
var (
	// ErrWrongGroup: the key's shard is not this group's in its applied
	// configuration. The client should re-read the configuration.
	ErrWrongGroup = errors.New("group: wrong group for key")
	// ErrNotReady: the shard is this group's but its data has not arrived
	// yet, or the other group is behind. Retry later.
	ErrNotReady = errors.New("group: shard not ready")
	// ErrStaleConfig: the request names a configuration this group has
	// already passed.
	ErrStaleConfig = errors.New("group: configuration already passed")
	// ErrKeyTooLarge and ErrValueTooLarge: the request exceeds the limits;
	// nothing changed.
	ErrKeyTooLarge   = errors.New("group: key too large")
	ErrValueTooLarge = errors.New("group: value too large")
	// ErrEmptyKey: keys must have at least one byte.
	ErrEmptyKey = errors.New("group: empty key")
	// ErrStaleRequest: the session already applied a later request.
	ErrStaleRequest = errors.New("group: request older than the session's last")
	// ErrSessionExpired: the request's session is unknown to the shard
	// (expired, or never opened), so it may be a retry of a request
	// applied before the session expired. Nothing was applied by this
	// request; an earlier attempt of it may have been. Open a new session.
	ErrSessionExpired = errors.New("group: session expired")
	// ErrMalformed: the request could not be decoded or is inconsistent.
	ErrMalformed = errors.New("group: malformed request")
)

// outcome codes of deterministic failures, as stored in duplicate tables.
var codes = session.Outcomes{nil, ErrValueTooLarge, ErrKeyTooLarge, ErrMalformed}

func errorCode(err error) uint32 { return codes.Code(err) }

func codeError(code uint32) error { return codes.Err(code) }
