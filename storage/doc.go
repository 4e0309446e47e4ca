// Package storage keeps every durable byte of a shardkv process in one Pebble
// engine.
//
// A process may host several replicas (the all-in-one dev cluster hosts all of
// them), and they share one engine so that their synced writes share one
// fsync stream: Pebble merges concurrent synced commits into a single WAL
// sync, which is what makes many small Raft appends cheap.
//
// # Key layout
//
// Every key but a process note (SaveNote) starts with the identity of the
// replica that owns it, so replicas never see each other's keys:
//
//	<kind:1> <group id:8, big endian> <replica id:8, big endian> <suffix>
//
// Four kinds exist:
//
//	'r'  Raft's own state and the replica's identity: 'h', 's' and 'l'
//	     written by RaftLog; 'i' by EnsureIdentity, SetMembers and
//	     SetFounders; 'p' by RecordHeard:
//	       'h'                hard state (term, vote, commit)
//	       's'                metadata of the latest snapshot (index, term, conf state)
//	       'l' <index:8 BE>   one log entry, framed with a CRC-32C checksum
//	       'i'                the replica's identity: cluster id and its
//	                          group's membership (JSON; see EnsureIdentity)
//	       'p' <peer id:8 BE> the replica heard from that peer (RecordHeard,
//	                          Heard)
//	'm'  the replica's state machine: its Progress under 'a' (applied index)
//	     and 't' (replicated time); every other suffix is the state
//	     machine's own business (see StateKey and StateSpan).
//	'u'  no suffix: the replica was dropped from this engine and not hosted
//	     again since (DropReplica, Unhosted)
//	'n'  followed by a name, with no replica identity: a note the process
//	     keeps for itself, outside every replica's keys (SaveNote, LoadNote)
//
// Big-endian indexes make the log sort in index order, so truncating the log
// is one DeleteRange and loading it is one forward scan.
//
// # Durability
//
// Raft entries and the hard state of one Ready are written in one synced
// batch (RaftLog.Append). A state machine writes the effects of the entries it
// applies together with its applied index in one batch of its own, so after a
// crash the state is exactly the state after some prefix of the log.
// An image restored from a snapshot replaces the replica's state machine
// space at once (ReplaceState): written to one sstable beside the engine
// and ingested, so that it does not pass through the WAL every replica of
// the process shares.
//
// # Corruption
//
// Each log entry carries a CRC-32C of its bytes. On load, a run of damaged
// entries at the very end of the log that lies above the persisted commit
// index is a torn tail: those entries were never reported as committed, and
// they are dropped (Raft fetches them again from the leader). Any other damaged
// entry is corruption in the middle of the log; loading fails with a
// *CorruptionError naming the engine directory and the index, and the replica
// refuses to start rather than serve from a log it cannot trust.
package storage
