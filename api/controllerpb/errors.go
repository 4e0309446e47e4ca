package controllerpb

import (
	"errors"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// Errors is the controller service's wire error table, shared by the
// servers and the clients: its errors, declared below, those of raft and
// storage (rpcerr.Raft) and those of sessions and undecodable commands
// (rpcerr.Commands).
var Errors = rpcerr.NewTable("shardkv.controller", rpcerr.Raft, rpcerr.Commands, rpcerr.Auth)

// Errors of the controller service a client can branch on. They live with
// the API, so that clients need no server code; package controller returns
// these values, and those of its sessions (rpcerr.ErrStaleRequest,
// rpcerr.ErrSessionExpired, rpcerr.ErrMalformed). Each is a deterministic
// refusal: the command changes nothing, and a retry of it gets the same
// error.
var (
	// ErrNotInitialized: the controller has no shard count yet (the
	// cluster was never initialized); client.New waits for it.
	ErrNotInitialized = Errors.New(codes.Unavailable, "NOT_INITIALIZED", "controller: not initialized (no shard count yet)")
	// ErrInvalidGroup: a Join names group id 0 or a group twice, or a
	// Join or SetReplicas gives a group no addresses or an empty one; also
	// (despite the name) an OpenSession without a client id.
	ErrInvalidGroup = Errors.New(codes.InvalidArgument, "INVALID_GROUP", "controller: invalid group")
	// ErrGroupExists: a Join names a group already in the configuration
	// with other addresses or another incarnation (another copy of its
	// id).
	ErrGroupExists = Errors.New(codes.AlreadyExists, "GROUP_EXISTS", "controller: group already joined with other addresses")
	// ErrUnknownGroup: a Leave, Move or SetReplicas names a group that is
	// not in the configuration (or another copy of its id).
	ErrUnknownGroup = Errors.New(codes.NotFound, "UNKNOWN_GROUP", "controller: unknown group")
	// ErrUnknownShard: a Move names a shard outside 0 to the shard count
	// minus 1.
	ErrUnknownShard = Errors.New(codes.OutOfRange, "UNKNOWN_SHARD", "controller: unknown shard")
	// ErrWouldOrphan: a Leave without force would remove every group,
	// leaving the data with no owner.
	ErrWouldOrphan = Errors.New(codes.FailedPrecondition, "WOULD_ORPHAN", "controller: leaving every group would orphan their data (use force)")
	// ErrInvalidShards: the cluster is created with a shard count outside
	// 1 to 4096 (MaxShards of package api/config).
	ErrInvalidShards = Errors.New(codes.InvalidArgument, "INVALID_SHARDS", "controller: shard count must be between 1 and 4096")
	// ErrBadReplica: the controller's check of a joining group refused
	// one of its replicas: an address that is not host:port, a server of
	// another cluster or group, one that serves no replica group, or the
	// same replica listed twice. The message names the replica and why.
	// Nothing changed.
	ErrBadReplica = Errors.New(codes.InvalidArgument, "BAD_REPLICA", "controller: bad replica")
	// ErrReplicaUnreachable: a replica of a joining group did not answer
	// the controller's check in time. Nothing changed; join the group once
	// every replica listed runs.
	ErrReplicaUnreachable = Errors.New(codes.FailedPrecondition, "REPLICA_UNREACHABLE", "controller: replica unreachable")
	// ErrGroupNotReady: no replica of a joining group states the group's
	// incarnation yet (Group.incarnation): a group just founded has one
	// once its first leader is elected, within seconds. Nothing changed;
	// the controller client's Join tries again until its context ends.
	ErrGroupNotReady = Errors.New(codes.FailedPrecondition, "GROUP_NOT_READY", "controller: group not ready (no leader elected yet)")
)

// Refusal reports whether err is a deterministic refusal of a change by
// the controller: the definitive outcome of the request, the same on every
// retry. (A join refused by the leader's check of its replicas is one: the
// verdict goes through the log and the request's session remembers it.)
func Refusal(err error) bool {
	for _, r := range []error{ErrNotInitialized, ErrInvalidGroup, ErrGroupExists, ErrUnknownGroup,
		ErrUnknownShard, ErrWouldOrphan, ErrInvalidShards, ErrBadReplica, ErrReplicaUnreachable, ErrGroupNotReady,
		rpcerr.ErrUserNotFound, rpcerr.ErrUserExists, rpcerr.ErrRoleNotFound, rpcerr.ErrRoleExists,
		rpcerr.ErrNoAdmin, rpcerr.ErrInvalidAuth, rpcerr.ErrCertCNTaken} {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// WatchLimit is the longest one Watch call lasts: the server answers with
// the latest configuration then if nothing newer came.
const WatchLimit = 10 * time.Second
