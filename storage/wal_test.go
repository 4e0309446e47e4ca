package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// newestWAL returns the path of the engine's newest write-ahead log file.
func newestWAL(t *testing.T, dir string) string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no WAL in %s: %v", dir, err)
	}
	slices.Sort(logs)
	return logs[len(logs)-1]
}

// writeSynced writes n synced single-key batches (k1..kn), as Raft appends
// are: each one acknowledged only once on disk.
func writeSynced(t *testing.T, dir string, n int) {
	t.Helper()
	e := openEngine(t, dir, Options{})
	for i := 1; i <= n; i++ {
		if err := e.DB().Set([]byte(fmt.Sprintf("k%03d", i)), []byte(strings.Repeat("v", 1000)), pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	// Simulate a crash: the WAL is not flushed into tables, as after a
	// power cut. (Close would flush nothing either: Pebble keeps the WAL.)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptedWALRefusesToOpen is issue 10's repro at the storage level:
// 200 synced writes, 16 bytes overwritten in the middle of the newest WAL.
// Pebble used to treat the damage as a torn tail and open without the
// later writes; the engine must refuse to open, naming the directory.
func TestCorruptedWALRefusesToOpen(t *testing.T) {
	for _, at := range []int64{2_000, 40_000, 100_000, 150_000} {
		t.Run(fmt.Sprint("offset", at), func(t *testing.T) {
			dir := t.TempDir()
			writeSynced(t, dir, 200)
			wal := newestWAL(t, dir)
			f, err := os.OpenFile(wal, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("0123456789abcdef"), at); err != nil {
				t.Fatal(err)
			}
			f.Close()
			e, err := Open(dir)
			if err == nil {
				missing := 0
				for i := 1; i <= 200; i++ {
					if _, ok, _ := Get(e.DB(), []byte(fmt.Sprintf("k%03d", i))); !ok {
						missing++
					}
				}
				e.Close()
				t.Fatalf("opened a corrupted engine; %d of 200 synced writes are missing", missing)
			}
			if !errors.Is(err, ErrCorrupted) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("error %q: want ErrCorrupted naming %s", err, dir)
			}
		})
	}
}

// TestTornWALTailRepairs: a WAL whose last write was cut short (a crash
// mid-write) opens, with every complete write.
func TestTornWALTailRepairs(t *testing.T) {
	dir := t.TempDir()
	writeSynced(t, dir, 200)
	wal := newestWAL(t, dir)
	st, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	// Cut into the last record.
	if err := os.Truncate(wal, st.Size()-300); err != nil {
		t.Fatal(err)
	}
	e, err := Open(dir)
	if err != nil {
		t.Fatalf("a torn tail must repair itself: %v", err)
	}
	defer e.Close()
	for i := 1; i <= 199; i++ {
		if _, ok, _ := Get(e.DB(), []byte(fmt.Sprintf("k%03d", i))); !ok {
			t.Fatalf("k%03d lost", i)
		}
	}
}
