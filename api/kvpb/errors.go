package kvpb

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// Errors of the KV service a client can branch on. They live with the API,
// so that clients need no server code; package group returns these values.
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

// Errors is the KV service's wire error table, shared by the servers and
// the clients: its errors and those of raft and storage (rpcerr.RaftEntries).
var Errors = rpcerr.NewTable("shardkv.kv", append([]rpcerr.Entry{
	{Err: ErrWrongGroup, Code: codes.FailedPrecondition, Reason: "WRONG_GROUP"},
	{Err: ErrNotReady, Code: codes.Unavailable, Reason: "NOT_READY"},
	{Err: ErrStaleConfig, Code: codes.FailedPrecondition, Reason: "STALE_CONFIG"},
	{Err: ErrKeyTooLarge, Code: codes.InvalidArgument, Reason: "KEY_TOO_LARGE"},
	{Err: ErrValueTooLarge, Code: codes.InvalidArgument, Reason: "VALUE_TOO_LARGE"},
	{Err: ErrEmptyKey, Code: codes.InvalidArgument, Reason: "EMPTY_KEY"},
	{Err: ErrStaleRequest, Code: codes.FailedPrecondition, Reason: "STALE_REQUEST"},
	{Err: ErrMalformed, Code: codes.InvalidArgument, Reason: "MALFORMED"},
	{Err: ErrSessionExpired, Code: codes.FailedPrecondition, Reason: "SESSION_EXPIRED"},
}, rpcerr.RaftEntries...)...)

// Default size limits of keys and values, which clients also check before
// sending.
const (
	DefaultMaxKeySize   = 4 << 10 // bytes
	DefaultMaxValueSize = 1 << 20 // bytes
)

// KnownWriteOp reports whether op is one of the write operations
// (WRITE_OP_UNSPECIFIED, a request that names none, is not).
func KnownWriteOp(op WriteOp) bool {
	_, ok := WriteOp_name[int32(op)]
	return ok && op != WriteOp_WRITE_OP_UNSPECIFIED
}

// CheckWrite validates a request's op and sizes against limits (bytes):
// ErrMalformed, ErrEmptyKey, ErrKeyTooLarge or ErrValueTooLarge. Reads are
// checked as deletes (a key, no value).
func CheckWrite(op WriteOp, key, value []byte, maxKey, maxValue int) error {
	if !KnownWriteOp(op) {
		return fmt.Errorf("%w: unknown write op %d", ErrMalformed, op)
	}
	switch {
	case len(key) == 0:
		return ErrEmptyKey
	case len(key) > maxKey:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), maxKey)
	case op != WriteOp_WRITE_OP_DELETE && len(value) > maxValue:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(value), maxValue)
	}
	return nil
}
