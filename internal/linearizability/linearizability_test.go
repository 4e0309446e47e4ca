package linearizability

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCheckAcceptsAndRejects(t *testing.T) {
	var ok Recorder
	ok.Done(0, Input{Op: Put, Key: "k", Value: "a"}, Output{}, 0, 10)
	ok.Done(1, Input{Op: Append, Key: "k", Value: "b"}, Output{}, 5, 20)
	ok.Done(0, Input{Op: Get, Key: "k"}, Output{Value: "ab", Found: true}, 30, 40)
	ok.Unknown(1, Input{Op: Append, Key: "k", Value: "c"}, 50) // may never have happened
	ok.Done(0, Input{Op: Get, Key: "k"}, Output{Value: "ab", Found: true}, 60, 70)
	if err := ok.Check(t.TempDir(), 0); err != nil {
		t.Fatalf("linearizable history refused: %v", err)
	}

	var bad Recorder
	bad.Done(0, Input{Op: Put, Key: "k", Value: "a"}, Output{}, 0, 10)
	bad.Done(1, Input{Op: Get, Key: "k"}, Output{Found: false}, 20, 30) // a stale read
	dir := t.TempDir()
	if err := bad.Check(dir, 0); err == nil {
		t.Fatal("stale read accepted")
	}
	for _, f := range []string{"history.html", "history.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s not kept: %v", f, err)
		}
	}
}

// TestVersionsAndConditions: versions and conditional writes are checked;
// a compare-and-swap that succeeds on a stale version is refused.
func TestVersionsAndConditions(t *testing.T) {
	put := func(v string) Input { return Input{Op: Put, Key: "k", Value: v} }
	cas := func(v string, version uint64) Input {
		return Input{Op: Put, Key: "k", Value: v, Cond: IfVersion, IfVersion: version}
	}
	wrote := func(succeeded bool, version uint64) Output {
		return Output{Versioned: true, Succeeded: succeeded, Version: version}
	}
	var ok Recorder
	ok.Done(0, put("a"), wrote(true, 1), 0, 10)
	ok.Done(1, cas("b", 1), wrote(true, 2), 20, 30)
	ok.Done(0, cas("c", 1), wrote(false, 2), 40, 50)
	ok.Done(1, Input{Op: Append, Key: "k", Value: "x", Cond: IfValue, IfValue: "b"},
		Output{Versioned: true, Succeeded: true, Version: 3, ValueReturned: true, Value: "bx"}, 60, 70)
	ok.Unknown(0, cas("d", 1), 80) // cannot hold: changes nothing wherever it goes
	ok.Done(1, Input{Op: Get, Key: "k"}, Output{Value: "bx", Found: true, Versioned: true, Version: 3}, 90, 100)
	ok.Done(0, Input{Op: Delete, Key: "k", Cond: IfVersion, IfVersion: 3}, wrote(true, 0), 110, 120)
	ok.Done(1, cas("e", 0), wrote(true, 1), 130, 140)
	if err := ok.Check(t.TempDir(), 0); err != nil {
		t.Fatalf("linearizable history refused: %v", err)
	}

	for name, h := range map[string]func(*Recorder){
		// Two CAS on version 1, sequential, both succeeded: the second
		// succeeded on a stale version.
		"stale CAS": func(r *Recorder) {
			r.Done(0, put("a"), wrote(true, 1), 0, 10)
			r.Done(1, cas("b", 1), wrote(true, 2), 20, 30)
			r.Done(0, cas("c", 1), wrote(true, 2), 40, 50)
		},
		// Concurrent, but only one of them can have held.
		"two winners": func(r *Recorder) {
			r.Done(0, put("a"), wrote(true, 1), 0, 10)
			r.Done(1, cas("b", 1), wrote(true, 2), 20, 50)
			r.Done(0, cas("c", 1), wrote(true, 2), 20, 50)
		},
		"wrong version read": func(r *Recorder) {
			r.Done(0, put("a"), wrote(true, 1), 0, 10)
			r.Done(0, put("a"), wrote(true, 2), 20, 30)
			r.Done(1, Input{Op: Get, Key: "k"}, Output{Value: "a", Found: true, Versioned: true, Version: 1}, 40, 50)
		},
		"failed though it held": func(r *Recorder) {
			r.Done(0, put("a"), wrote(true, 1), 0, 10)
			r.Done(1, cas("b", 1), wrote(false, 1), 20, 30)
		},
	} {
		var bad Recorder
		h(&bad)
		if err := bad.Check(t.TempDir(), 0); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
}
