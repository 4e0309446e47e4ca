package storage

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDataDirIsPrivate: an engine's directory is created 0700, and one
// that other users could read is narrowed to 0700 with a warning.
func TestDataDirIsPrivate(t *testing.T) {
	mode := func(dir string) os.FileMode {
		t.Helper()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))

	fresh := filepath.Join(t.TempDir(), "new", "data")
	e := openEngine(t, fresh, Options{Logger: log})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if m := mode(fresh); m != DirMode {
		t.Errorf("a new data directory has mode %#o, want %#o", m, DirMode)
	}
	// Only the narrowing warning is asserted on: the engine may warn about
	// other things on this machine (a disk below its free-space threshold).
	const narrowed = "data directory was accessible to other users"
	if strings.Contains(logged.String(), narrowed) {
		t.Errorf("a new directory was warned about: %s", logged.String())
	}

	open := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	e = openEngine(t, open, Options{Logger: log})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if m := mode(open); m != DirMode {
		t.Errorf("an existing data directory of mode 0755 has mode %#o after Open, want %#o", m, DirMode)
	}
	if !strings.Contains(logged.String(), narrowed) || !strings.Contains(logged.String(), open) {
		t.Errorf("narrowing %s was not warned about: %q", open, logged.String())
	}
}
