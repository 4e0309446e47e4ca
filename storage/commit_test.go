package storage

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
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
	e, err := OpenWith(t.TempDir(), Options{FS: errorfs.Wrap(vfs.NewMem(), full), OnFatal: func(err error) {
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

// TestWritesGoThroughCommit keeps Engine.Commit the one way to write: a
// write to Pebble from outside this package would go around guardWrite,
// and a failed log would end its process with a stack instead of a line
// (TestFailedWALEndsEveryLaterWrite). It looks at the syntax of every
// non-test file of the module: no call of a method that writes to a
// pebble.DB or commits a batch (by name: Commit and Apply with write
// options or nil last, LogData, Ingest and its variants, Excise; Set,
// Delete, Flush and the like on a receiver named db), and no Pebble write
// options. By name, so it errs on the side of refusing.
func TestWritesGoThroughCommit(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// Commit and Apply name other methods too (Engine.Commit's last
	// argument is a bool): Pebble's take write options last.
	writes := map[string]bool{"Commit": true, "Apply": true, "LogData": true, "Ingest": true, "IngestWithStats": true,
		"IngestAndExcise": true, "IngestExternalFiles": true, "Excise": true}
	dbWrites := map[string]bool{"Set": true, "Delete": true, "DeleteRange": true, "SingleDelete": true, "Merge": true,
		"Flush": true, "AsyncFlush": true}
	var bad []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || path == filepath.Join(root, "storage")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return nil // not Go this module builds
		}
		pebbleName := ""
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/cockroachdb/pebble/v2" {
				pebbleName = "pebble"
				if imp.Name != nil {
					pebbleName = imp.Name.Name
				}
			}
		}
		if pebbleName == "" {
			return nil // holds no Pebble value to write through
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var lastArg ast.Expr
			if call, ok := n.(*ast.CallExpr); ok && len(call.Args) > 0 {
				lastArg = call.Args[len(call.Args)-1]
				n = call.Fun
			}
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			name := sel.Sel.Name
			recv := ""
			switch x := sel.X.(type) {
			case *ast.Ident:
				recv = x.Name
			case *ast.SelectorExpr:
				recv = x.Sel.Name
			}
			switch {
			case recv == pebbleName && (name == "Sync" || name == "NoSync" || name == "WriteOptions"),
				writes[name] && (name != "Commit" && name != "Apply" || writeOptions(lastArg, pebbleName)),
				dbWrites[name] && strings.EqualFold(recv, "db"):
				found := fmt.Sprintf("%s: %s.%s", fset.Position(sel.Pos()), recv, name)
				if !slices.Contains(bad, found) { // a call's selector is visited on its own too
					bad = append(bad, found)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("writes to Pebble that do not go through Engine.Commit:\n%s", strings.Join(bad, "\n"))
	}
}

// writeOptions reports whether arg is nil or one of Pebble's write options
// (a selector of the package imported as pebbleName).
func writeOptions(arg ast.Expr, pebbleName string) bool {
	switch x := arg.(type) {
	case *ast.Ident:
		return x.Name == "nil"
	case *ast.SelectorExpr:
		id, ok := x.X.(*ast.Ident)
		return ok && id.Name == pebbleName
	}
	return false
}
