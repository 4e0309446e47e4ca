package storage

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
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

// TestReplaceStateRefusesOtherWrites: an image holds sets and deletes; a
// range deletion (or anything else) is refused and changes nothing.
func TestReplaceStateRefusesOtherWrites(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{})
	defer e.Close()
	r := Replica{Group: 4, ID: 1}
	setState(t, e.DB(), r, map[string]string{"k": "old"})
	err := r.ReplaceState(e, Progress{Applied: 3}, func(b *pebble.Batch) error {
		return b.DeleteRange(r.StateKey('a'), r.StateKey('z'), nil)
	})
	if err == nil {
		t.Fatal("a range deletion in an image was accepted")
	}
	if got := stateOf(t, e.DB(), r); fmt.Sprint(got) != fmt.Sprint(map[string]string{"k": "old"}) {
		t.Fatalf("a refused image changed the state: %q", got)
	}
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
