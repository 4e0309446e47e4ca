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
