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
//	Pulling     owned at N, data still at its owner at N-1   kvpb.ErrNotReady
//	Held        owned at N-1, not at N; kept for the owner,  kvpb.ErrWrongGroup
//	            no data has left yet
//	Offering    owned at N-1, not at N; kept for the owner,  kvpb.ErrWrongGroup
//	            which may have some of it
//	Confirming  owned at N, data here; old owner not yet     serves clients
//	            told it may delete its copy
//	Restoring   owned at N, being loaded from a backup       kvpb.ErrNotReady
//	            (restore entries; see backup.go)
//	Absent      not ours                                     kvpb.ErrWrongGroup
//
// Configuration N+1 is installed (through the log, in order, one at a time)
// only when every shard is Serving or Absent: every migration of N is
// finished (but see "Giving a shard back"). Installing it turns gained
// shards into Pulling (or straight into Serving when they come from group
// 0, that is, from nowhere) and lost ones into Held.
//
// # Handoff
//
// The new owner's leader pulls a shard from its owner at N-1, which answers
// only once it has applied N itself, and only once its log records the
// handover (a HandOver entry: Held → Offering; any replica proposes it
// before it sends data). It streams the shard in bounded chunks. Each chunk
// is an InsertShard entry in the new owner's log, applied only while the
// shard is Pulling at that configuration; the first chunk clears any
// partial copy, so a pull restarted after a leader change is harmless. The
// last chunk makes the shard Confirming. The new owner then asks the old
// owner to delete its copy, which it does through its own log (Offering →
// Absent), and records the acknowledgement (Confirming → Serving). Nothing
// here waits on the network: a driver does, and proposes what it learned.
//
// # Giving a shard back
//
// A new owner may die for good before it takes its shards, leaving the old
// owner Held at N forever. The controller's way out is a configuration N+1
// that gives such shards back to their owner at N-1 (a leave of the dead
// group does). A Held shard that N+1 gives back does not block N+1, and
// becomes Serving again without a handoff: no data of it has left, and
// nobody else served it. A shard in Offering is never taken back: the new
// owner may serve some of it, so the old owner waits for it as before.
//
// The handover entry is what makes this safe: it and the installation of
// N+1 are ordered by the old owner's log. If N+1 comes first, the handover
// (and so the pull) fails as past N; a new owner that is still Pulling when
// told so knows the shard was given back, gives the pull up through its own
// log (an AbandonPull entry: Pulling → Absent, nothing of it was served),
// and can move on to N+1, which does not give it the shard.
//
// # Exactly once
//
// Every write carries a session: client id and sequence number. Each shard
// has its own duplicate table (client id → last sequence number and its
// outcome), stored beside the shard's data and moved with it; merging takes
// the higher sequence per client. A refused write (wrong group, not ready)
// records nothing; a write that fails deterministically (an append past the
// value limit) records its failure, so a retry gets the same answer; so does
// a conditional write (whether its condition held, and the key's version
// after it), which is never evaluated again on a retry. Sessions
// idle for longer than Limits.SessionTTL, by the leader's stamps in the log,
// are forgotten.
//
// # Observing changes
//
// Watches need the applied changes without making the state machine
// impure: an Observer (Observe; package group/watch's hub) is called by
// whoever applies (raftnode's apply goroutine or Ready loop) once each
// Apply committed, with that batch's changes in
// log order — a write that changed a key (its value and version after),
// a shard that became servable (arrived) or stopped being owned (left,
// with the configuration whose owner has it next) — and once per snapshot
// install. A write whose condition failed, a refused write, a retry and a
// delete of a missing key change nothing and are not told.
//
// # Storage layout
//
// Under the replica's state prefix (see package storage):
//
//	'a'                           applied index
//	'm'                           Meta: configuration, previous one, shard states
//	'd' <shard:4> <key>           a key's version (uvarint) and value (value.go)
//	's' <shard:4> <client id:8>   a duplicate-table entry
//
// A shard's data and sessions are contiguous, so dropping a shard is two
// DeleteRange calls and exporting it is one scan of a Pebble snapshot.
package group
