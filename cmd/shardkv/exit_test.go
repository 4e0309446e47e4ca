package main

import (
	"errors"
	"fmt"
	"os/exec"
	"testing"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/storage"
)

// TestProcessStorageFailureExitsFive: a process hosting replicas whose
// storage failed ends with exitStorage even when the failure came back as
// an error (a replica stopped by a failed write), not only when OnFatal or
// OnStuck ended it; a client command given the same error exits
// exitFailed, and a process's other errors keep their codes.
func TestProcessStorageFailureExitsFive(t *testing.T) {
	for _, tc := range []struct {
		err     error
		process int
		client  int
	}{
		{fmt.Errorf("replica stopped: apply: %w", rpcerr.ErrNoSpace), exitStorage, exitFailed},
		{fmt.Errorf("replica stopped: %w", rpcerr.ErrStalled), exitStorage, exitFailed},
		{fmt.Errorf("open engine: %w", storage.ErrCannotPersist), exitStorage, exitFailed},
		{errors.New("data directory locked"), exitFailed, exitFailed},
		{usageError(fmt.Errorf("bad flag beside %w", rpcerr.ErrNoSpace)), exitUsage, exitUsage},
		{nil, exitOK, exitOK},
	} {
		run := func(*cobra.Command, []string) error { return tc.err }
		process := processCommand(&cobra.Command{RunE: run})
		if got := exitCode(process.RunE(process, nil)); got != tc.process {
			t.Errorf("process command failing with %v: exit %d, want %d", tc.err, got, tc.process)
		}
		if got := exitCode(run(nil, nil)); got != tc.client {
			t.Errorf("client command failing with %v: exit %d, want %d", tc.err, got, tc.client)
		}
	}
}

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
