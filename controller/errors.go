package controller

import (
	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/session"
)

// codes give each refusal a stable number for the session table on disk
// (append only).
var codes = session.Outcomes{nil,
	controllerpb.ErrNotInitialized, controllerpb.ErrInvalidGroup, controllerpb.ErrGroupExists,
	controllerpb.ErrUnknownGroup, controllerpb.ErrUnknownShard, controllerpb.ErrWouldOrphan,
	controllerpb.ErrInvalidShards, rpcerr.ErrStaleRequest, controllerpb.ErrBadReplica,
	controllerpb.ErrReplicaUnreachable, rpcerr.ErrMalformed,
	rpcerr.ErrUserNotFound, rpcerr.ErrUserExists, rpcerr.ErrRoleNotFound, rpcerr.ErrRoleExists,
	rpcerr.ErrNoAdmin, rpcerr.ErrInvalidAuth, rpcerr.ErrCertCNTaken, controllerpb.ErrGroupNotReady}

// RefusalCode is the code a leader's verdict on a change carries in the log
// (controllerpb.Refusal): err must be controllerpb.ErrBadReplica,
// controllerpb.ErrReplicaUnreachable or controllerpb.ErrGroupNotReady,
// possibly wrapped.
func RefusalCode(err error) uint32 { return codes.Code(err) }

func errorCode(err error) uint32 { return codes.Code(err) }

func codeError(code uint32) error { return codes.Err(code) }
