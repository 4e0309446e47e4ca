package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// CorruptionError reports damage that cannot be repaired: the replica must
// not start, because serving from a log it cannot trust could lose or invent
// acknowledged writes.
type CorruptionError struct {
	Dir     string  // engine directory
	Replica Replica // whose log is damaged; zero for the engine's own write-ahead log
	Index   uint64  // damaged log index; 0 for the hard state or snapshot record
	Reason  string
}

// Error names the directory, what is damaged (the engine's write-ahead
// log, or a replica's log entry or raft metadata) and the reason.
func (e *CorruptionError) Error() string {
	if e.Replica == (Replica{}) {
		return fmt.Sprintf("storage %s: write-ahead log is corrupted (a damaged record is followed by synced data, "+
			"so this is not a torn tail; acknowledged writes would be lost): %s", e.Dir, e.Reason)
	}
	what := "raft log entry " + fmt.Sprint(e.Index)
	if e.Index == 0 {
		what = "raft metadata"
	}
	return fmt.Sprintf("storage %s: group %d replica %d: %s is corrupted: %s",
		e.Dir, e.Replica.Group, e.Replica.ID, what, e.Reason)
}

// ErrCorrupted is matched (errors.Is) by every *CorruptionError.
var ErrCorrupted = errors.New("storage corrupted")

// Is lets errors.Is(err, ErrCorrupted) find a CorruptionError.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupted }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// RaftLog is the durable Raft state of one replica: its log, hard state and
// the metadata of its latest snapshot. Load, Append and TruncateAfter,
// which keep its fields, are called from one goroutine at a time (raftnode's
// Ready loop); Compact touches none of them and may run beside them
// (raftnode compacts from whichever goroutine applies). So it needs no
// locking of its own.
type RaftLog struct {
	e    *Engine
	r    Replica
	last uint64 // last index on disk, 0 for an empty log

	// Append's buffers, reused from one Ready to the next (Pebble's batch
	// copies what it is given): an entry's record and its key.
	buf, key []byte
}

// maxKeptBuf bounds the record buffer RaftLog keeps between appends: a
// rare large entry does not stay allocated.
const maxKeptBuf = 1 << 20

// RaftLog returns the log of replica r. Call Load before writing.
func (e *Engine) RaftLog(r Replica) *RaftLog { return &RaftLog{e: e, r: r} }

// RaftState is what a replica finds on disk when it starts.
type RaftState struct {
	HardState *raftpb.HardState        // nil when never written
	Snapshot  *raftpb.SnapshotMetadata // nil when no snapshot was taken
	Entries   []*raftpb.Entry          // entries above the snapshot, in order
	TornTail  int                      // damaged entries dropped from the tail
}

// Empty reports whether the replica has never persisted anything.
func (s RaftState) Empty() bool {
	return s.HardState == nil && s.Snapshot == nil && len(s.Entries) == 0
}

// loadRecord decodes the record at key into m and reports whether there is
// one. what names the record in errors; one that does not decode is
// corruption (l.corrupt).
func (l *RaftLog) loadRecord(key []byte, m proto.Message, what string) (bool, error) {
	v, ok, err := Get(l.e.db, key)
	if err != nil {
		return false, fmt.Errorf("load %s: %w", what, err)
	}
	if !ok {
		return false, nil
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return false, l.corrupt(0, what+": "+err.Error())
	}
	return true, nil
}

// Load reads the replica's Raft state, repairing a torn tail (see the
// package documentation) and refusing corruption anywhere else.
func (l *RaftLog) Load() (RaftState, error) {
	var st RaftState
	hs, snap := &raftpb.HardState{}, &raftpb.SnapshotMetadata{}
	if ok, err := l.loadRecord(l.r.hardStateKey(), hs, "hard state"); err != nil {
		return st, err
	} else if ok {
		st.HardState = hs
	}
	if ok, err := l.loadRecord(l.r.snapshotKey(), snap, "snapshot metadata"); err != nil {
		return st, err
	} else if ok {
		st.Snapshot = snap
	}

	it, err := l.e.db.NewIter(&pebble.IterOptions{LowerBound: l.r.logKey(0), UpperBound: l.r.logKey(math.MaxUint64)})
	if err != nil {
		return st, err
	}
	defer it.Close()
	var (
		firstBad  uint64 // index of the first damaged entry, 0 if none
		badReason string
		goodAfter bool // an intact entry follows a damaged one
		prev      uint64
	)
	for it.First(); it.Valid(); it.Next() {
		key := it.Key()
		index := binary.BigEndian.Uint64(key[len(key)-8:])
		ent, reason := decodeEntry(it.Value(), index)
		if reason == "" && prev != 0 && index != prev+1 {
			reason = fmt.Sprintf("gap: previous entry is %d", prev)
		}
		prev = index
		switch {
		case reason != "" && firstBad == 0:
			firstBad, badReason = index, reason
		case reason == "" && firstBad != 0:
			goodAfter = true
		case reason == "":
			st.Entries = append(st.Entries, ent)
		}
		l.last = index
	}
	if err := it.Error(); err != nil {
		return st, fmt.Errorf("scan raft log: %w", err)
	}
	if firstBad != 0 {
		if goodAfter || firstBad <= st.HardState.GetCommit() {
			return st, l.corrupt(firstBad, badReason)
		}
		// A torn tail: drop it so Raft refetches those entries.
		b := l.e.db.NewBatch()
		defer b.Close()
		if err := b.DeleteRange(l.r.logKey(firstBad), l.r.logKey(math.MaxUint64), nil); err != nil {
			return st, err
		}
		if err := l.e.syncWrite(b); err != nil {
			return st, fmt.Errorf("repair torn tail at %d: %w", firstBad, err)
		}
		st.TornTail = int(l.last - firstBad + 1)
		l.last = firstBad - 1
	}
	// Entries the snapshot covers are of no further use to Raft.
	if snap := st.Snapshot.GetIndex(); snap > 0 {
		i := 0
		for i < len(st.Entries) && st.Entries[i].GetIndex() <= snap {
			i++
		}
		st.Entries = st.Entries[i:]
	}
	return st, nil
}

// CheckWhole fails with a *CorruptionError, naming the first missing
// entry, unless st, as Load returned it, holds every entry from its
// snapshot to what its hard state says was committed: raft panics on a
// member that lacks one (raft.loadState, MemoryStorage.Append). Missing
// entries mean a data directory restored from an older copy, or a disk
// that lost synced writes: entries this replica acknowledged are gone. A
// member forced into a new cluster (raftnode's ForceNewCluster) is checked
// after it filled its log, not before.
func (l *RaftLog) CheckWhole(st RaftState) error {
	last := st.Snapshot.GetIndex()
	if len(st.Entries) > 0 {
		if first := st.Entries[0].GetIndex(); st.Snapshot != nil && first != last+1 {
			return l.corrupt(last+1, fmt.Sprintf("missing: the log resumes at entry %d after its snapshot at %d", first, last))
		}
		last = st.Entries[len(st.Entries)-1].GetIndex()
	}
	if commit := st.HardState.GetCommit(); commit > last {
		return l.corrupt(last+1, fmt.Sprintf("missing: the hard state says entry %d was committed, but the log ends at entry %d "+
			"(a data directory restored from an older copy, or a disk that lost synced writes, loses what this replica acknowledged)", commit, last))
	}
	return nil
}

func decodeEntry(v []byte, index uint64) (*raftpb.Entry, string) {
	if len(v) < 4 {
		return nil, "short record"
	}
	body := v[4:]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(v) {
		return nil, "checksum mismatch"
	}
	ent := &raftpb.Entry{}
	if err := proto.Unmarshal(body, ent); err != nil {
		return nil, "decode: " + err.Error()
	}
	if ent.GetIndex() != index {
		return nil, fmt.Sprintf("entry claims index %d", ent.GetIndex())
	}
	return ent, ""
}

func (l *RaftLog) corrupt(index uint64, reason string) error {
	return &CorruptionError{Dir: l.e.dir, Replica: l.r, Index: index, Reason: reason}
}

// Append writes the entries and hard state of one Ready in a single batch,
// synced when sync is true. An entry at an index already on disk replaces
// it, and any older entries after the new last index are removed: Raft only
// ever rewrites a conflicting suffix. A non-nil snap (a snapshot received
// from the leader) replaces the whole log and is written in the same batch.
func (l *RaftLog) Append(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.SnapshotMetadata, sync bool) error {
	b := l.e.db.NewBatch()
	defer b.Close()
	if snap != nil {
		if err := SetProto(b, l.r.snapshotKey(), snap); err != nil {
			return err
		}
		if err := b.DeleteRange(l.r.logKey(0), l.r.logKey(math.MaxUint64), nil); err != nil {
			return err
		}
		l.last = snap.GetIndex()
	}
	buf := l.buf
	defer func() {
		if cap(buf) <= maxKeptBuf {
			l.buf = buf[:0]
		}
	}()
	for _, e := range ents {
		buf = append(buf[:0], 0, 0, 0, 0) // checksum, filled in below
		var err error
		buf, err = proto.MarshalOptions{}.MarshalAppend(buf, e)
		if err != nil {
			return err
		}
		binary.BigEndian.PutUint32(buf, crc32.Checksum(buf[4:], castagnoli))
		l.key = l.r.appendLogKey(l.key[:0], e.GetIndex())
		if err := b.Set(l.key, buf, nil); err != nil {
			return err
		}
	}
	if n := len(ents); n > 0 {
		newLast := ents[n-1].GetIndex()
		if newLast < l.last {
			if err := b.DeleteRange(l.r.logKey(newLast+1), l.r.logKey(math.MaxUint64), nil); err != nil {
				return err
			}
		}
		l.last = newLast
	}
	if hs != nil {
		var err error
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf[:0], hs); err != nil {
			return err
		}
		l.key = append(l.r.appendPrefix(l.key[:0], kindRaft), raftHardState)
		if err := b.Set(l.key, buf, nil); err != nil {
			return err
		}
	}
	if b.Empty() {
		return nil
	}
	if err := l.e.Commit(b, sync); err != nil {
		return fmt.Errorf("append raft log of group %d replica %d: %w", l.r.Group, l.r.ID, err)
	}
	return nil
}

// TruncateAfter deletes every entry above index, synced (for a member
// rewriting its log, see raftnode's force-new-cluster).
func (l *RaftLog) TruncateAfter(index uint64) error {
	b := l.e.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(l.r.logKey(index+1), l.r.logKey(math.MaxUint64), nil); err != nil {
		return err
	}
	if err := l.e.syncWrite(b); err != nil {
		return fmt.Errorf("truncate raft log of group %d replica %d: %w", l.r.Group, l.r.ID, err)
	}
	l.last = min(l.last, index)
	return nil
}

// Compact records snap as the latest snapshot and deletes every entry at or
// below compactIndex (compactIndex <= snap.Index: entries between them stay
// for followers that are only a little behind).
func (l *RaftLog) Compact(snap *raftpb.SnapshotMetadata, compactIndex uint64) error {
	b := l.e.db.NewBatch()
	defer b.Close()
	if err := SetProto(b, l.r.snapshotKey(), snap); err != nil {
		return err
	}
	if err := b.DeleteRange(l.r.logKey(0), l.r.logKey(compactIndex+1), nil); err != nil {
		return err
	}
	// Not synced: losing it in a crash only means compacting again later.
	return l.e.Commit(b, false)
}
