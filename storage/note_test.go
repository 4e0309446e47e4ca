package storage

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestNotes: a note survives a reopen and lives outside every replica's
// keys (a replica's state replaced leaves it).
func TestNotes(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, Options{})
	if _, ok, err := e.LoadNote("auth-state"); ok || err != nil {
		t.Fatalf("a note before any: %v %v", ok, err)
	}
	if err := e.SaveNote("auth-state", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	r := Replica{Group: 1, ID: 1}
	if err := r.ReplaceState(e, Progress{Applied: 5}, func(*pebble.Batch) error { return nil }); err != nil {
		t.Fatal(err)
	}
	e.Close()
	e = openEngine(t, dir, Options{})
	defer e.Close()
	if v, ok, err := e.LoadNote("auth-state"); !ok || err != nil || string(v) != "v1" {
		t.Fatalf("after a reopen: %q %v %v", v, ok, err)
	}
}
