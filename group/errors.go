package group

import (
	"errors"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/session"
)

// ErrNotEmpty: a restore from a backup was refused because the shard
// already has data or sessions here: a restore only fills empty shards of
// a new cluster, it never overwrites.
var ErrNotEmpty = errors.New("group: shard is not empty")

// outcome codes of deterministic failures, as stored in duplicate tables.
var codes = session.Outcomes{nil, kvpb.ErrValueTooLarge, kvpb.ErrKeyTooLarge, rpcerr.ErrMalformed}

func errorCode(err error) uint32 { return codes.Code(err) }

func codeError(code uint32) error { return codes.Err(code) }
