package storage

import (
	"encoding/binary"
	"fmt"

	"github.com/shardkv/shardkv/api/kvpb"
)

// Replica identifies one member of one Raft group: the group id (the
// controller's own group, 0, included) and the member's Raft id within it.
type Replica struct {
	Group uint64
	ID    uint64
}

// String names the replica as logs and tools do: "controller/2",
// "group3/1".
func (r Replica) String() string {
	if r.Group == 0 {
		return fmt.Sprintf("controller/%d", r.ID)
	}
	return fmt.Sprintf("group%d/%d", r.Group, r.ID)
}

const (
	kindRaft  = 'r'
	kindState = 'm'

	raftHardState = 'h'
	raftSnapshot  = 's'
	raftLogEntry  = 'l'
	raftIdentity  = 'i'
)

func (r Replica) prefix(kind byte) []byte {
	k := make([]byte, 0, 1+16+16)
	k = append(k, kind)
	k = binary.BigEndian.AppendUint64(k, r.Group)
	k = binary.BigEndian.AppendUint64(k, r.ID)
	return k
}

func (r Replica) hardStateKey() []byte { return append(r.prefix(kindRaft), raftHardState) }
func (r Replica) snapshotKey() []byte  { return append(r.prefix(kindRaft), raftSnapshot) }

func (r Replica) logKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64(append(r.prefix(kindRaft), raftLogEntry), index)
}

// StateKey is the key of suffix in the state machine space of r.
func (r Replica) StateKey(suffix ...byte) []byte {
	return append(r.prefix(kindState), suffix...)
}

// StateSpan returns the [start, end) bounds of every key of r's state
// machine whose suffix starts with suffixPrefix.
func (r Replica) StateSpan(suffixPrefix ...byte) (start, end []byte) {
	start = r.StateKey(suffixPrefix...)
	return start, kvpb.PrefixEnd(start)
}
