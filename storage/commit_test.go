package storage

import (
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// TestFailedWALEndsEveryLaterWrite is the regression test of a replica on a
// full disk that died with a Go stack instead of one line: once Pebble's
// write-ahead log failed, the next commit panics inside Pebble
// (DB.commitWrite), on whichever goroutine writes. Every write after the
// failure, synced or not, must reach Options.OnFatal with an error
// matching ErrCannotPersist and rpcerr.ErrNoSpace, before anything panics.
func TestFailedWALEndsEveryLaterWrite(t *testing.T) {
	full := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if strings.HasSuffix(op.Path, ".log") && op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
			return syscall.ENOSPC
		}
		return nil
	})}
	var mu sync.Mutex
	var fatal []error
	// Never closed: a commit that panicked may hold Pebble's commit
	// pipeline, as it does in a process that is about to exit.
	e, err := OpenWith("db", Options{FS: errorfs.Wrap(vfs.NewMem(), full), OnFatal: func(err error) {
		mu.Lock()
		defer mu.Unlock()
		fatal = append(fatal, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	commit := func(i int, sync bool) (panicked any, err error) {
		defer func() { panicked = recover() }()
		b := e.DB().NewBatch()
		defer b.Close()
		// Larger than a WAL block (32 KiB): the log writer learns of its
		// flusher's failure when it hands over a full block.
		if err := b.Set([]byte(strconv.Itoa(i)), make([]byte, 40<<10), nil); err != nil {
			t.Fatal(err)
		}
		return nil, e.Commit(b, sync)
	}
	if p, err := commit(0, true); p != nil || err != nil {
		t.Fatalf("a write before the disk filled: panic %v, error %v", p, err)
	}
	full.On()
	reports := func() []error {
		mu.Lock()
		defer mu.Unlock()
		return append([]error(nil), fatal...)
	}
	// Pebble's own Fatalf reports the first synced write that fails
	// (quietLogger); a write after the log writer saw the failure panics
	// in Pebble, which guardWrite reports. Both must come to OnFatal
	// before the panic.
	sawPebblePanic := false
	for i := 1; i <= 20 && !sawPebblePanic; i++ {
		sync := i%2 == 0
		before := len(reports())
		p, err := commit(i, sync)
		after := reports()
		if p == nil {
			if len(after) != before {
				t.Fatalf("write %d (synced %v) reported %v to OnFatal and returned %v", i, sync, after[len(after)-1], err)
			}
			continue // not synced, and taken before the log writer saw the failure
		}
		if len(after) != before+1 {
			t.Fatalf("write %d (synced %v) panicked (%v) with %d reports to OnFatal, want one", i, sync, p, len(after)-before)
		}
		last := after[len(after)-1]
		if perr, ok := p.(error); !ok || perr != last {
			t.Fatalf("write %d (synced %v) panicked with %v, want the error OnFatal got (%v)", i, sync, p, last)
		}
		if !errors.Is(last, ErrCannotPersist) || !strings.Contains(last.Error(), "no space left") {
			t.Fatalf("write %d (synced %v): OnFatal got %v, want ErrCannotPersist saying the disk is full", i, sync, last)
		}
		t.Logf("write %d (synced %v): %v", i, sync, last)
		if strings.Contains(last.Error(), "a write failed in Pebble") {
			sawPebblePanic = true
			if !errors.Is(last, rpcerr.ErrNoSpace) {
				t.Fatalf("write %d after the disk filled: %v, want it to match ErrNoSpace", i, last)
			}
		}
	}
	if !sawPebblePanic {
		t.Fatalf("20 writes on a failed log and Pebble never panicked in a commit: %v", reports())
	}
}

// TestWritesGoThroughCommit keeps Engine.Commit the one way to write:
// code outside this package that passes Pebble's write options commits
// around guardWrite, and a failed log would end its process with a stack
// instead of a line (TestFailedWALEndsEveryLaterWrite).
func TestWritesGoThroughCommit(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"storage/commit.go": true, "storage/health.go": true}
	var bad []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if allowed[filepath.ToSlash(rel)] {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly); err != nil {
			return nil // not Go this module builds
		}
		for i, line := range strings.Split(string(src), "\n") {
			if strings.Contains(line, "pebble.Sync") || strings.Contains(line, "pebble.NoSync") {
				bad = append(bad, fmt.Sprintf("%s:%d: %s", rel, i+1, strings.TrimSpace(line)))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("writes to Pebble that do not go through Engine.Commit:\n%s", strings.Join(bad, "\n"))
	}
}
