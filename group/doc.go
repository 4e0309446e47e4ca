// Package group is the state machine of a replica group: the shards it owns
// by its own applied configuration, their data, and their duplicate tables.
//
// Like every shardkv state machine it is deterministic and holds no
// goroutines, clocks or sockets. It keeps its state in the replica's part
// of the Pebble engine and plugs into a raft node (raftnode.StateMachine);
// package groupserver serves it and runs the drivers that act on it.
//
// # Shard states
//
// For its current configuration N, the group holds each shard in one state:
//
//	Serving     owned at N, data here                        serves clients
//	Pulling     owned at N, data still at its owner at N-1   ErrNotReady
//	Offering    owned at N-1, not at N; kept for the owner   ErrWrongGroup
//	Confirming  owned at N, data here; old owner not yet     serves clients
//	            told it may delete its copy
//	Absent      not ours                                     ErrWrongGroup
//
// Configuration N+1 is installed (through the log, in order, one at a time)
// only when every shard is Serving or Absent: every migration of N is
// finished. Installing it turns gained shards into Pulling (or straight into
// Serving when they come from group 0, that is, from nowhere) and lost ones
// into Offering.
//
// # Handoff
//
// The new owner's leader pulls a shard from its owner at N-1, which answers
// only once it has applied N itself, and streams the shard in bounded
// chunks. Each chunk is an InsertShard entry in the new owner's log, applied
// only while the shard is Pulling at that configuration; the first chunk
// clears any partial copy, so a pull restarted after a leader change is
// harmless. The last chunk makes the shard Confirming. The new owner then
// asks the old owner to delete its copy, which it does through its own log
// (Offering → Absent), and records the acknowledgement (Confirming →
// Serving). Nothing here waits on the network: a driver does, and proposes
// what it learned.
//
// # Exactly once
//
// Every write carries a session: client id and sequence number. Each shard
// has its own duplicate table (client id → last sequence number and its
// outcome), stored beside the shard's data and moved with it; merging takes
// the higher sequence per client. A refused write (wrong group, not ready)
// records nothing; a write that fails deterministically (an append past the
// value limit) records its failure, so a retry gets the same answer. Sessions
// idle for longer than Limits.SessionTTL, by the leader's stamps in the log,
// are forgotten.
//
// # Storage layout
//
// Under the replica's state prefix (see package storage):
//
//	'a'                           applied index
//	'm'                           Meta: configuration, previous one, shard states
//	'd' <shard:4> <key>           a key's value
//	's' <shard:4> <client id:8>   a duplicate-table entry
//
// A shard's data and sessions are contiguous, so dropping a shard is two
// DeleteRange calls and exporting it is one scan of a Pebble snapshot.
package group
