package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// stateOf returns r's state machine space in db as key suffix → value.
func stateOf(t *testing.T, db pebble.Reader, r Replica) map[string]string {
	t.Helper()
	lo, hi := r.StateSpan()
	got := map[string]string{}
	if err := Scan(db, lo, hi, func(k, v []byte) error {
		got[string(k[len(lo):])] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func setState(t *testing.T, db *pebble.DB, r Replica, kv map[string]string) {
	t.Helper()
	b := db.NewBatch()
	for k, v := range kv {
		if err := b.Set(r.StateKey([]byte(k)...), []byte(v), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func progressValue(n uint64) string {
	var b [8]byte
	for i := range b {
		b[7-i] = byte(n >> (8 * i))
	}
	return string(b[:])
}

// TestReplaceStateReplacesOnlyItsSpace: after ReplaceState a replica's
// state is exactly the image (the last write of a key winning, a deleted
// key absent, nothing of the old state left), another replica's state on
// the same engine is untouched, a snapshot opened before still reads the
// old state, and no table of the image is left in the directory.
func TestReplaceStateReplacesOnlyItsSpace(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, Options{})
	defer e.Close()
	r, other := Replica{Group: 1, ID: 2}, Replica{Group: 1, ID: 3}
	setState(t, e.DB(), r, map[string]string{"k1": "old1", "k2": "old2", "a": progressValue(7)})
	setState(t, e.DB(), other, map[string]string{"k1": "theirs"})
	before := e.DB().NewSnapshot()
	defer before.Close()

	err := r.ReplaceState(e, Progress{Applied: 10, Now: 5}, func(b *pebble.Batch) error {
		for _, w := range []struct{ k, v string }{{"k3", "new3"}, {"k2", "first"}, {"k2", "new2"}, {"k4", "gone"}} {
			if err := b.Set(r.StateKey([]byte(w.k)...), []byte(w.v), nil); err != nil {
				return err
			}
		}
		return b.Delete(r.StateKey([]byte("k4")...), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"k2": "new2", "k3": "new3", "a": progressValue(10), "t": progressValue(5)}
	if got := stateOf(t, e.DB(), r); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state after ReplaceState: %q, want %q", got, want)
	}
	if p, err := r.ReadProgress(e.DB()); err != nil || p != (Progress{Applied: 10, Now: 5}) {
		t.Fatalf("progress: %+v %v", p, err)
	}
	if got := stateOf(t, e.DB(), other); fmt.Sprint(got) != fmt.Sprint(map[string]string{"k1": "theirs"}) {
		t.Fatalf("the other replica's state: %q", got)
	}
	old := map[string]string{"k1": "old1", "k2": "old2", "a": progressValue(7)}
	if got := stateOf(t, before, r); fmt.Sprint(got) != fmt.Sprint(old) {
		t.Fatalf("a snapshot opened before reads %q, want the old state %q", got, old)
	}
	names, _ := os.ReadDir(dir)
	for _, n := range names {
		if strings.HasPrefix(n.Name(), imagePrefix) {
			t.Fatalf("%s left in the engine's directory", n.Name())
		}
	}
}

// TestReplaceStateBypassesTheLog: an image does not pass through the
// write-ahead log the process's replicas share (it would hold every
// other replica's synced writes behind it): restoring 8 MiB writes a few
// bytes to the WAL.
func TestReplaceStateBypassesTheLog(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{})
	defer e.Close()
	r := Replica{Group: 4, ID: 1}
	setState(t, e.DB(), r, map[string]string{"k": "old"})
	walBefore := e.DB().Metrics().WAL.BytesIn
	value := bytes.Repeat([]byte("v"), 1024)
	const keys = 8 << 10
	if err := r.ReplaceState(e, Progress{Applied: 3}, func(b *pebble.Batch) error {
		for i := range keys {
			if err := b.Set(r.StateKey(fmt.Appendf(nil, "key-%06d", i)...), value, nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := len(stateOf(t, e.DB(), r)); got != keys+2 {
		t.Fatalf("%d keys after the restore, want %d and the progress", got, keys)
	}
	if wal := e.DB().Metrics().WAL.BytesIn - walBefore; wal > 64<<10 {
		t.Fatalf("the restore of %d MiB wrote %d bytes to the WAL", keys*len(value)>>20, wal)
	}
}

// TestReplaceStateRefusesOtherWrites: an image holds sets and deletes of
// its replica's state space; a range deletion, or a key of another
// replica, is refused and changes nothing.
func TestReplaceStateRefusesOtherWrites(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{})
	defer e.Close()
	r, other := Replica{Group: 4, ID: 1}, Replica{Group: 4, ID: 2}
	setState(t, e.DB(), r, map[string]string{"k": "old"})
	setState(t, e.DB(), other, map[string]string{"k": "theirs"})
	for name, fill := range map[string]func(b *pebble.Batch) error{
		"a range deletion": func(b *pebble.Batch) error {
			return b.DeleteRange(r.StateKey('a'), r.StateKey('z'), nil)
		},
		"a set of another replica's key": func(b *pebble.Batch) error {
			return b.Set(other.StateKey('k'), []byte("mine"), nil)
		},
		"a delete of another replica's key": func(b *pebble.Batch) error {
			return b.Delete(other.StateKey('k'), nil)
		},
	} {
		if err := r.ReplaceState(e, Progress{Applied: 3}, fill); err == nil {
			t.Fatalf("%s in an image was accepted", name)
		}
		if got := stateOf(t, e.DB(), r); fmt.Sprint(got) != fmt.Sprint(map[string]string{"k": "old"}) {
			t.Fatalf("%s: a refused image changed the state: %q", name, got)
		}
		if got := stateOf(t, e.DB(), other); fmt.Sprint(got) != fmt.Sprint(map[string]string{"k": "theirs"}) {
			t.Fatalf("%s: a refused image changed another replica's state: %q", name, got)
		}
	}
}

// TestReplaceStateSurvivesPowerLoss: once ReplaceState returns, the image
// is there after a power loss (a clone of the in-memory filesystem that
// holds only what was synced), on both of Pebble's ingestion paths: the
// table queued behind the memtables holding the old state (recorded in
// the WAL), and those memtables flushed first (recorded in the manifest).
// The other replica's state is untouched, and no table is left behind.
func TestReplaceStateSurvivesPowerLoss(t *testing.T) {
	for _, flushFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("memtables flushed first=%v", flushFirst), func(t *testing.T) {
			dir := t.TempDir()
			fs := vfs.NewCrashableMem()
			e := openEngine(t, dir, Options{FS: fs, disableFlushableIngest: flushFirst})
			r, other := Replica{Group: 1, ID: 2}, Replica{Group: 1, ID: 3}
			// In the memtable: the ingestion overlaps it.
			setState(t, e.DB(), r, map[string]string{"k1": "old1", "k2": "old2", "a": progressValue(7)})
			setState(t, e.DB(), other, map[string]string{"k1": "theirs"})
			asFlushable := e.DB().Metrics().Flush.AsIngestCount
			if err := r.ReplaceState(e, Progress{Applied: 10, Now: 5}, func(b *pebble.Batch) error {
				return errors.Join(b.Set(r.StateKey('k', '3'), []byte("new3"), nil),
					b.Set(r.StateKey('k', '2'), []byte("new2"), nil))
			}); err != nil {
				t.Fatal(err)
			}
			crashed := fs.CrashClone(vfs.CrashCloneCfg{})
			// A table queued behind memtables counts once flushed.
			if err := e.DB().Flush(); err != nil {
				t.Fatal(err)
			}
			if queued := e.DB().Metrics().Flush.AsIngestCount > asFlushable; queued == flushFirst {
				t.Fatalf("the table was queued behind the memtables: %v, want %v", queued, !flushFirst)
			}
			e.Close()
			e = openEngine(t, dir, Options{FS: crashed})
			defer e.Close()
			want := map[string]string{"k2": "new2", "k3": "new3", "a": progressValue(10), "t": progressValue(5)}
			if got := stateOf(t, e.DB(), r); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("after a power loss: %q, want %q", got, want)
			}
			if got := stateOf(t, e.DB(), other); fmt.Sprint(got) != fmt.Sprint(map[string]string{"k1": "theirs"}) {
				t.Fatalf("the other replica's state after a power loss: %q", got)
			}
			names, _ := crashed.List(dir)
			for _, n := range names {
				if strings.HasPrefix(n, imagePrefix) {
					t.Fatalf("%s left after a power loss", n)
				}
			}
		})
	}
}

// noSpaceFS fails every write to an image's table with ENOSPC.
type noSpaceFS struct{ vfs.FS }

func (f noSpaceFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.Create(name, c)
	if err != nil || !strings.HasPrefix(filepath.Base(name), imagePrefix) {
		return file, err
	}
	return noSpaceFile{file}, nil
}

type noSpaceFile struct{ vfs.File }

func (noSpaceFile) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

// TestReplaceStateOnAFullDisk: a restore the disk has no room for fails
// with rpcerr.ErrNoSpace, changes nothing, leaves no table, and the engine
// still takes writes.
func TestReplaceStateOnAFullDisk(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, Options{FS: noSpaceFS{vfs.Default}})
	defer e.Close()
	r := Replica{Group: 1, ID: 2}
	setState(t, e.DB(), r, map[string]string{"k1": "old1"})
	err := r.ReplaceState(e, Progress{Applied: 10}, func(b *pebble.Batch) error {
		return b.Set(r.StateKey('k', '2'), make([]byte, 1<<20), nil)
	})
	if !errors.Is(err, rpcerr.ErrNoSpace) {
		t.Fatalf("a restore on a full disk: %v, want ErrNoSpace", err)
	}
	if got := stateOf(t, e.DB(), r); fmt.Sprint(got) != fmt.Sprint(map[string]string{"k1": "old1"}) {
		t.Fatalf("a failed restore changed the state: %q", got)
	}
	names, _ := os.ReadDir(dir)
	for _, n := range names {
		if strings.HasPrefix(n.Name(), imagePrefix) {
			t.Fatalf("%s left by a failed restore", n.Name())
		}
	}
	setState(t, e.DB(), r, map[string]string{"k9": "still writable"})
}

// TestOpenRemovesUnfinishedImages: a table a crash kept ReplaceState from
// ingesting is removed when the engine opens again.
func TestOpenRemovesUnfinishedImages(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, Options{})
	e.Close()
	left := filepath.Join(dir, imagePrefix+"1-2-1.sst")
	if err := os.WriteFile(left, []byte("half a table"), 0o600); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir, Options{})
	defer e.Close()
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("%s after open: %v", left, err)
	}
}
