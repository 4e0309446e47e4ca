package storage

import (
	"os"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestPowerLossKeepsSyncedWrites makes, one case at a time, each write the
// engine promises to sync (what a member acknowledges, and what the safety
// checks at start read) as the last write before a simulated power loss:
// a clone of the in-memory filesystem that holds only what was synced.
// The write must be there after it, and must not be before it (or the
// case would pass whatever the write did). The last case is an unsynced
// write, which must not survive, or the simulation would prove nothing.
func TestPowerLossKeepsSyncedWrites(t *testing.T) {
	r := Replica{Group: 2, ID: 1}
	three := map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1"}
	cid := ClusterIDFor("shardkv", three)
	hs := &raftpb.HardState{Term: proto.Uint64(3), Vote: proto.Uint64(2), Commit: proto.Uint64(1)}
	ents := []*raftpb.Entry{
		{Term: proto.Uint64(3), Index: proto.Uint64(1), Data: []byte("acknowledged")},
		{Term: proto.Uint64(3), Index: proto.Uint64(2), Data: []byte("acknowledged too")},
	}
	dropped := Replica{Group: 5, ID: 2}
	snap := &raftpb.SnapshotMetadata{Index: proto.Uint64(10), Term: proto.Uint64(3), ConfState: &raftpb.ConfState{Voters: []uint64{1, 2, 3}}}
	for _, tc := range []struct {
		name  string
		write func(*Engine) error
		check func(*Engine) (ok bool, got any)
	}{{
		name:  "raft entries and hard state appended synced",
		write: func(e *Engine) error { return e.RaftLog(r).Append(hs, ents, nil, true) },
		check: func(e *Engine) (bool, any) {
			st, err := e.RaftLog(r).Load()
			return err == nil && proto.Equal(st.HardState, hs) && len(st.Entries) == 2 &&
				proto.Equal(st.Entries[0], ents[0]) && proto.Equal(st.Entries[1], ents[1]), st
		},
	}, {
		name:  "a received snapshot",
		write: func(e *Engine) error { return e.RaftLog(r).Append(nil, nil, snap, true) },
		check: func(e *Engine) (bool, any) {
			st, err := e.RaftLog(r).Load()
			return err == nil && proto.Equal(st.Snapshot, snap), st
		},
	}, {
		name: "a log truncated after an index",
		write: func(e *Engine) error {
			if err := e.RaftLog(r).Append(hs, ents, nil, true); err != nil {
				return err
			}
			return e.RaftLog(r).TruncateAfter(1)
		},
		check: func(e *Engine) (bool, any) {
			st, err := e.RaftLog(r).Load()
			return err == nil && len(st.Entries) == 1 && proto.Equal(st.Entries[0], ents[0]), st
		},
	}, {
		name: "a state machine image",
		write: func(e *Engine) error {
			return r.ReplaceState(e, Progress{Applied: 10, Now: 5}, func(b *pebble.Batch) error {
				return b.Set(r.StateKey('k'), []byte("image"), nil)
			})
		},
		check: func(e *Engine) (bool, any) {
			p, err := r.ReadProgress(e.DB())
			v, found, gerr := Get(e.DB(), r.StateKey('k'))
			return err == nil && gerr == nil && p == (Progress{Applied: 10, Now: 5}) && found && string(v) == "image", p
		},
	}, {
		// The founders a joined replica learns (a founder's identity
		// holds them from its first start).
		name:  "founders",
		write: func(e *Engine) error { return e.SetFounders(r, []uint64{1, 2}) },
		check: func(e *Engine) (bool, any) {
			id, ok, err := e.LoadIdentity(r)
			return err == nil && ok && slices.Equal(id.FoundingVoters, []uint64{1, 2}), id
		},
	}, {
		name:  "a peer heard from",
		write: func(e *Engine) error { return e.RecordHeard(r, 3) },
		check: func(e *Engine) (bool, any) {
			got, err := e.Heard(r)
			return err == nil && slices.Equal(got, []uint64{3}), got
		},
	}, {
		name:  "a note",
		write: func(e *Engine) error { return e.SaveNote("note", []byte("kept")) },
		check: func(e *Engine) (bool, any) {
			v, ok, err := e.LoadNote("note")
			return err == nil && ok && string(v) == "kept", string(v)
		},
	}, {
		name: "a dropped replica",
		write: func(e *Engine) error {
			if _, err := e.EnsureIdentity(dropped, Identity{ClusterID: cid, Peers: three}, ClusterNew); err != nil {
				return err
			}
			if err := e.RaftLog(dropped).Append(hs, ents, nil, true); err != nil {
				return err
			}
			return e.DropReplica(dropped)
		},
		check: func(e *Engine) (bool, any) {
			gone, err := e.Unhosted(dropped)
			st, lerr := e.RaftLog(dropped).Load()
			_, stored, ierr := e.LoadIdentity(dropped)
			return err == nil && lerr == nil && ierr == nil && gone && st.Empty() && !stored, st
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := powerLoss(t, r, Identity{ClusterID: cid, Peers: three}, tc.check, tc.write)
			defer e.Close()
			if ok, got := tc.check(e); !ok {
				t.Fatalf("after the power loss: %v", got)
			}
			if id, ok, err := e.LoadIdentity(r); err != nil || !ok || id.ClusterID != cid {
				t.Fatalf("identity after the power loss: %+v %v %v", id, ok, err)
			}
		})
	}
	t.Run("an unsynced append is lost", func(t *testing.T) {
		e := powerLoss(t, r, Identity{ClusterID: cid, Peers: three}, nil, func(e *Engine) error {
			return e.RaftLog(r).Append(hs, ents, nil, false)
		})
		defer e.Close()
		if st, err := e.RaftLog(r).Load(); err != nil || !st.Empty() {
			t.Fatalf("an unsynced append survived the simulated power loss (%v): %v", err, st)
		}
	})
}

// powerLoss opens an engine on a crashable in-memory filesystem, stores
// r's identity (synced), checks that check (if any) does not hold yet,
// makes write, and returns the engine reopened on what a power loss right
// after would leave.
func powerLoss(t *testing.T, r Replica, id Identity, check func(*Engine) (bool, any), write func(*Engine) error) *Engine {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, DirMode); err != nil { // as a data directory is kept: no warning
		t.Fatal(err)
	}
	fs := vfs.NewCrashableMem()
	e := openEngine(t, dir, Options{FS: fs})
	if _, err := e.EnsureIdentity(r, id, ClusterNew); err != nil {
		t.Fatal(err)
	}
	if check != nil {
		if ok, got := check(e); ok {
			t.Fatalf("holds before the write: %v", got)
		}
	}
	if err := write(e); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	_ = e.Close()
	return openEngine(t, dir, Options{FS: crashed})
}
