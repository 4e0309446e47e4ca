package main

import (
	"errors"
	"os/exec"
	"testing"
)

// TestDevTakesANodesStorageExit: a process dev started that exits on its
// own with the storage exit code (5: its disk cannot persist) ends dev
// with the same code; any other exit, with exitFailed.
func TestDevTakesANodesStorageExit(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 5", exitStorage},
		{"exit 4", exitFailed},
		{"exit 2", exitFailed},
		{"kill -9 $$", exitFailed},
	} {
		c := &child{name: "node 1", cmd: exec.Command("sh", "-c", tc.script)}
		c.err = c.cmd.Run()
		var ee *exec.ExitError
		if !errors.As(c.err, &ee) {
			t.Fatalf("%s: %v", tc.script, c.err)
		}
		if got := exitCode(c.exitError("")); got != tc.want {
			t.Errorf("a node that ran %q: dev exits %d, want %d (%v)", tc.script, got, tc.want, c.exitError(""))
		}
	}
}
