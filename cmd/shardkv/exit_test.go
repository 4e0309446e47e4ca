package main

import (
	"errors"
	"fmt"
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
