package storage

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"
)

func entries(lo, hi uint64) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, &raftpb.Entry{Index: new(i), Term: new(uint64(1)), Data: []byte{byte(i)}})
	}
	return out
}

func openLog(t *testing.T, dir string) (*Engine, *RaftLog) {
	t.Helper()
	e := openEngine(t, dir, Options{})
	return e, e.RaftLog(Replica{Group: 3, ID: 2})
}

func TestRaftLogRoundTrip(t *testing.T) {
	dir := t.TempDir()
	e, l := openLog(t, dir)
	if st, err := l.Load(); err != nil || !st.Empty() {
		t.Fatalf("new log: %+v, %v", st, err)
	}
	hs := &raftpb.HardState{Term: new(uint64(2)), Vote: new(uint64(1)), Commit: new(uint64(5))}
	if err := l.Append(hs, entries(1, 10), nil, true); err != nil {
		t.Fatal(err)
	}
	// A conflicting suffix from a new leader replaces 8..10 with 8..9.
	if err := l.Append(nil, entries(8, 9), nil, true); err != nil {
		t.Fatal(err)
	}
	snap := &raftpb.SnapshotMetadata{Index: new(uint64(4)), Term: new(uint64(1)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}}}
	if err := l.Compact(snap, 3); err != nil {
		t.Fatal(err)
	}
	e.Close()

	e, l = openLog(t, dir)
	defer e.Close()
	st, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if st.HardState.GetCommit() != 5 || st.HardState.GetTerm() != 2 {
		t.Fatalf("hard state %v", st.HardState)
	}
	if st.Snapshot.GetIndex() != 4 || len(st.Snapshot.GetConfState().GetVoters()) != 3 {
		t.Fatalf("snapshot %v", st.Snapshot)
	}
	if len(st.Entries) != 5 || st.Entries[0].GetIndex() != 5 || st.Entries[4].GetIndex() != 9 {
		t.Fatalf("entries %v", st.Entries)
	}
}

// damage overwrites the record of index with bytes that fail their checksum.
func damage(t *testing.T, e *Engine, l *RaftLog, index uint64) {
	t.Helper()
	if err := e.db.Set(l.r.logKey(index), []byte{0, 0, 0, 0, 1, 2, 3}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func TestTornTailIsRepaired(t *testing.T) {
	dir := t.TempDir()
	e, l := openLog(t, dir)
	hs := &raftpb.HardState{Term: new(uint64(1)), Commit: new(uint64(6))}
	if err := l.Append(hs, entries(1, 10), nil, true); err != nil {
		t.Fatal(err)
	}
	damage(t, e, l, 9)
	damage(t, e, l, 10)
	e.Close()

	e, l = openLog(t, dir)
	st, err := l.Load()
	if err != nil {
		t.Fatalf("torn tail not repaired: %v", err)
	}
	if st.TornTail != 2 || len(st.Entries) != 8 {
		t.Fatalf("torn tail %d, %d entries left", st.TornTail, len(st.Entries))
	}
	// The repair is durable, and the log accepts the entries again.
	if err := l.Append(nil, entries(9, 9), nil, true); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e, l = openLog(t, dir)
	defer e.Close()
	st, err = l.Load()
	if err != nil || st.TornTail != 0 || len(st.Entries) != 9 {
		t.Fatalf("after repair: %d entries, torn %d, %v", len(st.Entries), st.TornTail, err)
	}
}

func TestCorruptionRefusesToLoad(t *testing.T) {
	cases := []struct {
		name    string
		commit  uint64
		damaged []uint64
		want    uint64
	}{
		{"middle entry", 10, []uint64{5}, 5},
		{"middle entry of uncommitted tail", 3, []uint64{5}, 5},
		{"committed tail entry", 10, []uint64{10}, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			e, l := openLog(t, dir)
			hs := &raftpb.HardState{Term: new(uint64(1)), Commit: new(tc.commit)}
			if err := l.Append(hs, entries(1, 10), nil, true); err != nil {
				t.Fatal(err)
			}
			for _, i := range tc.damaged {
				damage(t, e, l, i)
			}
			e.Close()
			e, l = openLog(t, dir)
			defer e.Close()
			_, err := l.Load()
			var ce *CorruptionError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupted) {
				t.Fatalf("got %v, want a CorruptionError", err)
			}
			if ce.Index != tc.want || ce.Dir != dir {
				t.Fatalf("error names %s index %d, want %s index %d: %v", ce.Dir, ce.Index, dir, tc.want, err)
			}
			// Refusing changes nothing: the damage is still there to inspect.
			if _, err := l.Load(); !errors.Is(err, ErrCorrupted) {
				t.Fatalf("second load: %v", err)
			}
		})
	}
}

// TestMissingEntriesRefuseToLoad: a log that does not hold every entry from
// its snapshot to its hard state's commit index (the newest committed
// entries gone, or a hole after the snapshot) fails CheckWhole as
// corrupted, naming the first missing entry: raft would panic on it.
func TestMissingEntriesRefuseToLoad(t *testing.T) {
	snap := &raftpb.SnapshotMetadata{Index: new(uint64(4)), Term: new(uint64(1)), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}}}
	for _, tc := range []struct {
		name    string
		commit  uint64
		from    uint64 // entries from..9 written above the snapshot at 4
		missing uint64
	}{
		{"committed tail gone", 12, 5, 10},
		{"hole after the snapshot", 9, 7, 5},
		{"whole", 9, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, l := openLog(t, t.TempDir())
			defer e.Close()
			hs := &raftpb.HardState{Term: new(uint64(1)), Commit: new(tc.commit)}
			if err := l.Append(hs, entries(tc.from, 9), snap, true); err != nil {
				t.Fatal(err)
			}
			st, err := l.Load()
			if err != nil {
				t.Fatal(err)
			}
			err = l.CheckWhole(st)
			var ce *CorruptionError
			switch {
			case tc.missing == 0 && err != nil:
				t.Fatalf("a whole log: %v", err)
			case tc.missing != 0 && (!errors.As(err, &ce) || ce.Index != tc.missing):
				t.Fatalf("%s: %v, want entry %d reported missing", tc.name, err, tc.missing)
			}
		})
	}
}
