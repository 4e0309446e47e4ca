package group

import (
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/session"
)

// Errors a caller can branch on: the KV API's (see package kvpb).
var (
	ErrWrongGroup     = kvpb.ErrWrongGroup
	ErrNotReady       = kvpb.ErrNotReady
	ErrStaleConfig    = kvpb.ErrStaleConfig
	ErrKeyTooLarge    = kvpb.ErrKeyTooLarge
	ErrValueTooLarge  = kvpb.ErrValueTooLarge
	ErrEmptyKey       = kvpb.ErrEmptyKey
	ErrStaleRequest   = kvpb.ErrStaleRequest
	ErrSessionExpired = kvpb.ErrSessionExpired
	ErrMalformed      = kvpb.ErrMalformed
)

// outcome codes of deterministic failures, as stored in duplicate tables.
var codes = session.Outcomes{nil, ErrValueTooLarge, ErrKeyTooLarge, ErrMalformed}

func errorCode(err error) uint32 { return codes.Code(err) }

func codeError(code uint32) error { return codes.Err(code) }
