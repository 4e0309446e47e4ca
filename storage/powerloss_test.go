package storage

import (
	"os"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TestPowerLossKeepsSyncedWrites makes, one case at a time, each write the
// engine promises to sync (what a member acknowledges, and what the safety
// checks at start read) as the last write before a simulated power loss:
// a clone of the in-memory filesystem that holds only what was synced.
// The write must be there after it. The last case is an unsynced write,
// which must not be, or the simulation would prove nothing.
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
		name:  "founders",
		write: func(e *Engine) error { return e.SetFounders(r, []uint64{1, 2, 3}) },
		check: func(e *Engine) (bool, any) {
			id, ok, err := e.LoadIdentity(r)
			return err == nil && ok && slices.Equal(id.FoundingVoters, []uint64{1, 2, 3}), id
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
		name:  "a dropped replica's tombstone",
		write: func(e *Engine) error { return e.DropReplica(dropped) },
		check: func(e *Engine) (bool, any) {
			gone, err := e.Unhosted(dropped)
			return err == nil && gone, gone
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := powerLoss(t, r, Identity{ClusterID: cid, Peers: three}, tc.write)
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
		e := powerLoss(t, r, Identity{ClusterID: cid, Peers: three}, func(e *Engine) error {
			return e.RaftLog(r).Append(hs, ents, nil, false)
		})
		defer e.Close()
		if st, err := e.RaftLog(r).Load(); err != nil || !st.Empty() {
			t.Fatalf("an unsynced append survived the simulated power loss (%v): %v", err, st)
		}
	})
}

// powerLoss opens an engine on a crashable in-memory filesystem, stores
// r's identity (synced), makes write, and returns the engine reopened on
// what a power loss right after would leave.
func powerLoss(t *testing.T, r Replica, id Identity, write func(*Engine) error) *Engine {
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
	if err := write(e); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	_ = e.Close()
	return openEngine(t, dir, Options{FS: crashed})
}
