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
	kindRaft     = 'r'
	kindState    = 'm'
	kindUnhosted = 'u' // a replica dropped from this engine (DropReplica), by group and id

	raftHardState = 'h'
	raftSnapshot  = 's'
	raftLogEntry  = 'l'
	raftIdentity  = 'i'
	raftHeard     = 'p' // + a peer's raft id: the replica heard from that peer (RecordHeard)
)

func (r Replica) prefix(kind byte) []byte {
	return r.appendPrefix(make([]byte, 0, 1+16+16), kind)
}

func (r Replica) appendPrefix(dst []byte, kind byte) []byte {
	dst = append(dst, kind)
	dst = binary.BigEndian.AppendUint64(dst, r.Group)
	return binary.BigEndian.AppendUint64(dst, r.ID)
}

func (r Replica) hardStateKey() []byte { return append(r.prefix(kindRaft), raftHardState) }
func (r Replica) unhostedKey() []byte  { return r.prefix(kindUnhosted) }
func (r Replica) snapshotKey() []byte  { return append(r.prefix(kindRaft), raftSnapshot) }
func (r Replica) heardPrefix() []byte  { return append(r.prefix(kindRaft), raftHeard) }

func (r Replica) logKey(index uint64) []byte {
	return r.appendLogKey(make([]byte, 0, 1+16+1+8), index)
}

func (r Replica) appendLogKey(dst []byte, index uint64) []byte {
	return binary.BigEndian.AppendUint64(append(r.appendPrefix(dst, kindRaft), raftLogEntry), index)
}

// StateKey is the key of suffix in the state machine space of r.
func (r Replica) StateKey(suffix ...byte) []byte {
	return append(r.prefix(kindState), suffix...)
}

// AppendStateKey appends to dst the prefix of r's state machine space:
// StateKey(suffix...) is AppendStateKey(nil) followed by suffix. For a
// caller that builds keys in a buffer it reuses.
func (r Replica) AppendStateKey(dst []byte) []byte { return r.appendPrefix(dst, kindState) }

// StateSpan returns the [start, end) bounds of every key of r's state
// machine whose suffix starts with suffixPrefix.
func (r Replica) StateSpan(suffixPrefix ...byte) (start, end []byte) {
	start = r.StateKey(suffixPrefix...)
	return start, kvpb.PrefixEnd(start)
}
