// Package kvpb is the replica groups' client API (service shardkv.kv.v1.KV:
// Get, Write, Status), generated from kv.proto, with its typed errors
// (Errors, the wire table), the size limits clients check before sending
// (CheckWrite) and the write operations (an UNSPECIFIED op is malformed).
package kvpb
