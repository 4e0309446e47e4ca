// Package kvpb is the replica groups' client API (service shardkv.kv.v1.KV:
// Get, Write, List, Status, Watch, Batch), generated from kv.proto, with
// its typed errors (Errors, the wire table), the checks clients make
// before sending (CheckWrite, CheckCondition and CheckList), KV.Batch's
// bounds (MaxBatchOps, MaxBatchRequestBytes and MaxBatchReplyBytes), a
// List reply's (MaxListBytes), and the write operations (an UNSPECIFIED op
// is malformed).
// Go programs should use package client; this package is for other
// clients and the servers.
package kvpb
