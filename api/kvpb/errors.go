package kvpb

import (
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// Errors is the KV service's wire error table, shared by the servers and
// the clients: its errors, declared below, those of raft and storage
// (rpcerr.Raft) and those of sessions and undecodable commands
// (rpcerr.Commands).
var Errors = rpcerr.NewTable("shardkv.kv", rpcerr.Raft, rpcerr.Commands, rpcerr.Auth)

// Errors of the KV service a client can branch on. They live with the API,
// so that clients need no server code; package group returns these values.
var (
	// ErrWrongGroup: the key's shard is not this group's in its applied
	// configuration. The client should re-read the configuration.
	ErrWrongGroup = Errors.New(codes.FailedPrecondition, "WRONG_GROUP", "group: wrong group for key")
	// ErrNotReady: the shard is this group's but its data has not arrived
	// yet, or the other group is behind. Retry later.
	ErrNotReady = Errors.New(codes.Unavailable, "NOT_READY", "group: shard not ready")
	// ErrStaleConfig: the request names a configuration this group has
	// already passed.
	ErrStaleConfig = Errors.New(codes.FailedPrecondition, "STALE_CONFIG", "group: configuration already passed")
	// ErrKeyTooLarge: a key or a listing bound is above the group's key
	// limit; nothing changed.
	ErrKeyTooLarge = Errors.New(codes.InvalidArgument, "KEY_TOO_LARGE", "group: key too large")
	// ErrValueTooLarge: a value, an if_value, or the value an append would
	// make is above the group's value limit; nothing changed.
	ErrValueTooLarge = Errors.New(codes.InvalidArgument, "VALUE_TOO_LARGE", "group: value too large")
	// ErrEmptyKey: keys must have at least one byte.
	ErrEmptyKey = Errors.New(codes.InvalidArgument, "EMPTY_KEY", "group: empty key")
	// ErrWatchFellBehind: a watch stream did not take its changes as fast
	// as the replica applied them, and was cancelled rather than hold up
	// the replica. Resume it from the last index received.
	ErrWatchFellBehind = Errors.New(codes.Aborted, "WATCH_FELL_BEHIND", "group: watcher fell behind")
	// ErrBatchFull: a batched Get was read, but its value did not fit in
	// the batch's reply (MaxBatchReplyBytes). Nothing changed: send it in a
	// call of its own (the Go client does so by itself).
	ErrBatchFull = Errors.New(codes.ResourceExhausted, "BATCH_FULL", "kv: no room for this reply in the batch")
)

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
// rpcerr.ErrMalformed, ErrEmptyKey, ErrKeyTooLarge or ErrValueTooLarge. Reads are
// checked as deletes (a key, no value).
func CheckWrite(op WriteOp, key, value []byte, maxKey, maxValue int) error {
	if !KnownWriteOp(op) {
		return fmt.Errorf("%w: unknown write op %d", rpcerr.ErrMalformed, op)
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
