package group

import (
	"slices"

	"github.com/shardkv/shardkv/api/kvpb"
)

// ChangeKind tells what a Change is.
type ChangeKind uint8

const (
	// ChangeWrite: a write changed a key (Op, Key, Value, Version).
	ChangeWrite ChangeKind = iota + 1
	// ChangeArrived: the shard became servable here in configuration
	// ConfigNum (the last handoff chunk, a configuration that gives it
	// from nowhere or back, the end of a restore).
	ChangeArrived
	// ChangeLeft: the shard, owned here (served, or being pulled or
	// restored), is not any more; its writes from configuration ConfigNum
	// on are its owner's at ConfigNum.
	ChangeLeft
)

// Change is one applied change, as an Observer sees it. Its slices are
// never written afterwards, by the state machine or anyone else: a write's
// are those of the command decoded from the log entry (which the write's
// proposer may read too, as its outcome's value), not copies.
type Change struct {
	Kind  ChangeKind
	Index uint64 // the log index of the entry that made it
	Shard int
	// A write's: PUT, APPEND or DELETE; the key; its value after the
	// write (the whole value after an append; nil after a delete); its
	// version after it (0 after a delete).
	Op      kvpb.WriteOp
	Key     []byte
	Value   []byte
	Version uint64
	// ConfigNum: see ChangeArrived and ChangeLeft.
	ConfigNum uint64
}

// Shards is the group's shard states at one applied index, as an Observer
// needs them to tell a shard that will arrive from one that will not.
type Shards struct {
	ConfigNum uint64
	States    []ShardState // by shard; empty before the first configuration
}

// Owned reports whether the group owns shard at its configuration (serves
// it, or will once its data is in).
func (s Shards) Owned(shard int) bool {
	if shard < 0 || shard >= len(s.States) {
		return false
	}
	return s.States[shard].owned()
}

// Servable reports whether the group serves shard.
func (s Shards) Servable(shard int) bool {
	return shard >= 0 && shard < len(s.States) && s.States[shard].servable()
}

// Observer is told what the state machine applied, by whoever applied the
// batch (raftnode's apply goroutine, or its Ready loop for a small batch)
// after the batch committed, under the state machine's lock: it must not
// block (it would stall the group's raft rounds), and must not call the
// state machine.
type Observer interface {
	// Applied: the changes of the entries up to index, in log order, and
	// the shard states after them when they changed (nil otherwise).
	Applied(index uint64, changes []Change, shards *Shards)
	// Restored: the state was replaced by an image at index (a snapshot
	// from the leader): the changes since the previous index are unknown.
	Restored(index uint64, shards Shards)
}

// Observe makes o the state machine's observer (nil: none). It first
// calls o.Restored with the applied index and shard states o starts from:
// o hears of every apply after it, none before.
func (sm *StateMachine) Observe(o Observer) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.observer = o
	if o != nil {
		o.Restored(sm.applied, sm.shardStates())
	}
}

// shardStates copies the shard states; sm.mu is held.
func (sm *StateMachine) shardStates() Shards {
	s := Shards{ConfigNum: sm.meta.config.Num, States: make([]ShardState, len(sm.meta.shards))}
	for i, m := range sm.meta.shards {
		s.States[i] = m.state
	}
	return s
}

// owned: the group owns the shard at its configuration.
func (s ShardState) owned() bool {
	return s == Serving || s == Confirming || s == Pulling || s == Restoring
}

// observeWrite records a write that changed a key, for the observer.
func (a *apply) observeWrite(shard int, op kvpb.WriteOp, key, value []byte, version uint64) {
	if !a.observed {
		return
	}
	a.changes = append(a.changes, Change{Kind: ChangeWrite, Index: a.index, Shard: shard, Op: op,
		Key: key, Value: value, Version: version})
}

// observeShards records the shards that arrived or left between before
// and the state now, for the observer. A shard that left with a new
// configuration is the new one's owner's; one that left at the same
// configuration (a pull given up: the old owner's next configuration gave
// it back) is the next one's.
func (sm *StateMachine) observeShards(a *apply, before Shards) {
	if !a.observed {
		return
	}
	after := sm.shardStates()
	if before.ConfigNum == after.ConfigNum && slices.Equal(before.States, after.States) {
		return
	}
	left := after.ConfigNum
	if before.ConfigNum == after.ConfigNum {
		left++
	}
	for shard := range after.States {
		switch {
		case !before.Servable(shard) && after.Servable(shard):
			a.changes = append(a.changes, Change{Kind: ChangeArrived, Index: a.index, Shard: shard, ConfigNum: after.ConfigNum})
		case before.Owned(shard) && !after.Owned(shard):
			a.changes = append(a.changes, Change{Kind: ChangeLeft, Index: a.index, Shard: shard, ConfigNum: left})
		}
	}
	a.shards = &after
}
