// Package transportpb is what replicas say to one another at the raft level
// (service shardkv.transport.v1.Raft: batched message streams, chunked
// snapshots, Member; service Replica: Identify). Not client API.
package transportpb
