package controllerpb

import (
	"errors"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// Errors of the controller service a client can branch on. They live with
// the API, so that clients need no server code; package controller returns
// these values. The first eight and the last two are deterministic
// refusals: the command changes nothing, and a retry of it gets the same
// error.
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
	// session (expired, or never opened), so it may retry a change applied
	// before the session expired. Nothing was applied by this request;
	// open a new session.
	ErrSessionExpired = errors.New("controller: session expired")
	// ErrMalformed: the command could not be decoded or names no change.
	// Nothing was applied.
	ErrMalformed = errors.New("controller: malformed command")
	// ErrBadReplica: the controller's check of a joining group refused
	// one of its replicas: an address that is not host:port, a server of
	// another cluster or group, one that serves no replica group, or the
	// same replica listed twice. The message names the replica and why.
	// Nothing changed.
	ErrBadReplica = errors.New("controller: bad replica")
	// ErrReplicaUnreachable: a replica of a joining group did not answer
	// the controller's check in time. Nothing changed; join the group once
	// every replica listed runs.
	ErrReplicaUnreachable = errors.New("controller: replica unreachable")
)

// Errors is the controller service's wire error table, shared by the
// servers and the clients.
var Errors = rpcerr.NewTable("shardkv.controller", append([]rpcerr.Entry{
	{Err: ErrNotInitialized, Code: codes.Unavailable, Reason: "NOT_INITIALIZED"},
	{Err: ErrInvalidGroup, Code: codes.InvalidArgument, Reason: "INVALID_GROUP"},
	{Err: ErrGroupExists, Code: codes.AlreadyExists, Reason: "GROUP_EXISTS"},
	{Err: ErrUnknownGroup, Code: codes.NotFound, Reason: "UNKNOWN_GROUP"},
	{Err: ErrUnknownShard, Code: codes.OutOfRange, Reason: "UNKNOWN_SHARD"},
	{Err: ErrWouldOrphan, Code: codes.FailedPrecondition, Reason: "WOULD_ORPHAN"},
	{Err: ErrInvalidShards, Code: codes.InvalidArgument, Reason: "INVALID_SHARDS"},
	{Err: ErrStaleRequest, Code: codes.FailedPrecondition, Reason: "STALE_REQUEST"},
	{Err: ErrSessionExpired, Code: codes.FailedPrecondition, Reason: "SESSION_EXPIRED"},
	{Err: ErrMalformed, Code: codes.InvalidArgument, Reason: "MALFORMED"},
	{Err: ErrBadReplica, Code: codes.InvalidArgument, Reason: "BAD_REPLICA"},
	{Err: ErrReplicaUnreachable, Code: codes.FailedPrecondition, Reason: "REPLICA_UNREACHABLE"},
}, rpcerr.RaftEntries...)...)

// Refusal reports whether err is a deterministic refusal of a change by
// the controller: the definitive outcome of the request, the same on every
// retry. (A join refused by the leader's check of its replicas is one: the
// verdict goes through the log and the request's session remembers it.)
func Refusal(err error) bool {
	for _, r := range []error{ErrNotInitialized, ErrInvalidGroup, ErrGroupExists, ErrUnknownGroup,
		ErrUnknownShard, ErrWouldOrphan, ErrInvalidShards, ErrBadReplica, ErrReplicaUnreachable} {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// WatchLimit is the longest one Watch call lasts: the server answers with
// the latest configuration then if nothing newer came.
const WatchLimit = 10 * time.Second
