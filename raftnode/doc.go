// Package raftnode runs one member of one Raft group: etcd's raft library
// (go.etcd.io/raft/v3) wired to Pebble storage, a transport and a state
// machine.
//
// The package knows nothing of keys, shards or configurations. It turns a
// byte string proposed on the leader into an entry applied, in the same
// order, by the StateMachine of every member, and it answers linearizable
// reads without writing to the log.
//
// # The Ready loop
//
// etcd raft is a pure state machine; this package is its driver. Raft's
// RawNode sits behind a mutex (inline.go): whoever brings it an input (the
// transport stepping a message, a proposer, the ticker) does raft's work in
// its own goroutine, with no goroutine of raft's own to hand inputs to. One
// goroutine (run) takes each Ready and handles it in this order:
//
//  1. A leader sends its messages first. Its own disk write then proceeds in
//     parallel with its followers' (Raft §10.2.1): the leader counts itself
//     towards a quorum only after its append is durable, so this is safe.
//  2. A snapshot received from the leader is restored into the state machine,
//     then recorded in the log, so that a crash in between leaves a state
//     machine that is ahead of the log (harmless: entries at or below the
//     applied index are skipped) and never behind it.
//  3. New entries and the hard state go to Pebble in one synced batch.
//  4. A follower sends its messages only now, after its entries are durable:
//     an append acknowledgement must never precede the append.
//  5. Committed entries are queued to the apply goroutine, and Advance lets
//     Raft prepare the next Ready while they apply. A small batch (at most
//     64 entries and 16 KiB) with no batch queued before it is applied by
//     the Ready loop itself: handing it over would cost a goroutine, and usually a
//     thread, a wake-up per round on every member.
//
// # Applying, snapshots and compaction
//
// The apply goroutine (or the Ready loop, for a small batch) hands
// committed entries to StateMachine.Apply, one batch at a time, which
// writes their effects and the applied index in one Pebble batch. Once the
// log has grown by Config.SnapshotEntries entries or Config.SnapshotBytes
// bytes since the last snapshot,
// the node records snapshot metadata at the applied index and deletes old
// log entries (keeping Config.CatchUpEntries for slightly lagging
// followers).
//
// Snapshot metadata carries no data. When the leader must send a snapshot,
// it asks the state machine for its current image (StateMachine.Snapshot),
// which may be newer than the metadata's index; the receiver restores it and
// skips the entries the image already reflects. This is how etcd v3 ships its
// backend, and it means no second copy of the state is ever kept on disk.
//
// # Proposals
//
// Propose may be called on any member: a follower forwards the proposal to
// the leader it knows (Raft's proposal forwarding); a member that knows no
// leader answers *rpcerr.NotLeaderError. It returns once the entry is
// applied here, with the value StateMachine.Apply produced for it.
// Every proposal carries a unique id, so the proposer recognises its own
// entry and also recognises when a different entry took its index
// (rpcerr.ErrProposalDropped: definitely not applied). When the node loses
// leadership, every pending proposal fails at once with
// rpcerr.ErrLeaderChanged: the entry may or may not be applied later, so
// callers deduplicate retries themselves (shardkv's client sessions do). A
// node stopped while a proposal is pending fails it with
// rpcerr.ErrStoppedInFlight, for the same reason; only rpcerr.ErrStopped
// from a node that had already stopped proves nothing was appended.
// rpcerr.CertainlyNotApplied is the one place that classifies these errors.
// The node never re-proposes, so it never applies anything twice. Its
// errors are package rpcerr's sentinels, which clients decode from the wire
// without linking this package.
//
// # Linearizable reads
//
// ReadIndex uses Raft's ReadOnlySafe read index: the leader confirms it is
// still leader with a heartbeat round, and the read waits until the local
// applied index reaches the commit index of that moment. Concurrent readers
// are batched: every reader that arrives while a round is in flight joins the
// next round, so a thousand readers cost one heartbeat round, not a thousand.
// No goroutine waits on a round's behalf (read.go): the first reader of an
// idle member asks raft itself; the Ready loop, which receives raft's
// answer, finishes the round (its readers wake once the applied index
// reaches the round's index) and asks for the next; a leader change asks
// again at once, and a timer after two election timeouts, five times at
// most before rpcerr.ErrReadTimeout.
//
// # Configuration
//
// PreVote and CheckQuorum are always on: a partitioned replica cannot disrupt
// the group when it returns, and a leader that loses its quorum steps down
// after one election timeout, failing its pending proposals. The defaults (10
// ms ticks, heartbeats every 5 ticks, an election timeout of 25 ticks that
// Raft randomises to 250–500 ms) fail a dead leader over in well under a
// second on a LAN while keeping an idle group's heartbeat traffic low (an
// idle all-in-one cluster of 12 replicas used a tenth of a core with
// 10 ms heartbeats). Config.Ticks replaces the ticker with a clock the
// caller drives.
//
// # Quiescence
//
// An idle group quiesces: its leader, finding nothing to replicate, apply
// or confirm at two heartbeat checks in a row, sends every member a
// heartbeat marked quiesce, and from then on no member ticks or heartbeats
// until a message, proposal, read or membership change wakes it. The
// transport stands in for the heartbeats: each process names its quiesced
// replicas to its peer processes every transport.QuiescedInterval, and a
// quiesced follower that stops seeing its leader named for an election
// timeout wakes and campaigns. Only transports implementing
// transport.Quiescence (the gRPC one) quiesce; quiesce.go has the details
// and the argument that it touches liveness only.
//
// # Tests
//
// The transcripts in testdata/*.txt (TestInteraction, modelled on etcd
// raft's datadriven interaction tests) tell elections, proposal
// forwarding, leader changes with proposals in flight, reads (also
// across a member's restart and its leader's re-election), restarts and
// stops message by message: real members, their clocks injected through
// Config.Ticks, their messages held until the transcript delivers them,
// and etcd raft's RawNode stepped synchronously by the transcript itself,
// so every run is the same.
package raftnode
