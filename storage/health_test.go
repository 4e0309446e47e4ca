package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// TestHealthFollowsPebbleEvents: an out-of-space background error makes the
// engine refuse writes with rpcerr.ErrNoSpace until a flush succeeds; a write
// stall longer than a second reports rpcerr.ErrStalled.
func TestHealthFollowsPebbleEvents(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{Logger: slog.New(slog.DiscardHandler)})
	defer e.Close()
	l := e.health.listener()
	e.health.resumeBytes.Store(math.MaxInt64) // only the events decide here
	if err := e.Health(); err != nil {
		t.Fatalf("a new engine: %v", err)
	}
	l.BackgroundError(fmt.Errorf("flush: %w", &fs.PathError{Op: "write", Path: "000007.sst", Err: syscall.ENOSPC}))
	if err := e.Health(); !errors.Is(err, rpcerr.ErrNoSpace) {
		t.Fatalf("after ENOSPC: %v", err)
	}
	l.FlushEnd(pebble.FlushInfo{})
	if err := e.Health(); err != nil {
		t.Fatalf("after a successful flush: %v", err)
	}
	l.WriteStallBegin(pebble.WriteStallBeginInfo{Reason: "memtable count limit reached"})
	e.health.mu.Lock()
	e.health.stalledSince = time.Now().Add(-2 * time.Second)
	e.health.mu.Unlock()
	if err := e.Health(); !errors.Is(err, rpcerr.ErrStalled) {
		t.Fatalf("during a 2s write stall: %v", err)
	}
	l.WriteStallEnd()
	if err := e.Health(); err != nil {
		t.Fatalf("after the stall: %v", err)
	}
	if st := e.HealthStats(); st.BackgroundErrors != 1 || st.WriteStalls != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestStuckSyncedWriteIsReported: a synced write outliving the stall limit
// calls OnStuck once and makes the engine unhealthy.
func TestStuckSyncedWriteIsReported(t *testing.T) {
	stuck := make(chan error, 2)
	e := openEngine(t, t.TempDir(), Options{Logger: slog.New(slog.DiscardHandler), StallLimit: 200 * time.Millisecond,
		OnStuck: func(err error) { stuck <- err }})
	defer e.Close()
	// A synced write that never returns, as on a hung disk.
	e.health.syncMu.Lock()
	e.health.inFlight = map[uint64]time.Time{1: time.Now()}
	e.health.syncMu.Unlock()
	select {
	case err := <-stuck:
		if !errors.Is(err, rpcerr.ErrStalled) {
			t.Fatalf("OnStuck(%v)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stuck synced write was never reported")
	}
	if err := e.Health(); !errors.Is(err, rpcerr.ErrStalled) {
		t.Fatalf("health of a stuck engine: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if len(stuck) != 0 {
		t.Fatal("OnStuck called twice")
	}
}

// TestFullEngineResumesWhenSpaceIsFreed: with writes refused nothing may
// flush, so free space on the disk is what lets a full engine resume.
func TestFullEngineResumesWhenSpaceIsFreed(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{Logger: slog.New(slog.DiscardHandler), StallLimit: 400 * time.Millisecond})
	defer e.Close()
	e.health.listener().BackgroundError(fmt.Errorf("compaction: %w", syscall.ENOSPC))
	if err := e.Health(); !errors.Is(err, rpcerr.ErrNoSpace) {
		t.Fatalf("after ENOSPC: %v", err)
	}
	// The test's disk has space: the watchdog notices within a tick.
	deadline := time.Now().Add(5 * time.Second)
	for e.Health() != nil {
		if time.Now().After(deadline) {
			t.Fatal("a full engine never resumed with free space on its disk")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err == nil {
		t.Fatal("a second Close succeeded")
	}
}
