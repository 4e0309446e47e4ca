package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// TestHealthFollowsPebbleEvents: an out-of-space background error makes the
// engine refuse writes with ErrNoSpace until a flush succeeds; a write
// stall longer than a second reports ErrStalled.
func TestHealthFollowsPebbleEvents(t *testing.T) {
	e, err := OpenWith(t.TempDir(), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	l := e.health.listener()
	if err := e.Health(); err != nil {
		t.Fatalf("a new engine: %v", err)
	}
	l.BackgroundError(fmt.Errorf("flush: %w", &fs.PathError{Op: "write", Path: "000007.sst", Err: syscall.ENOSPC}))
	if err := e.Health(); !errors.Is(err, ErrNoSpace) {
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
	if err := e.Health(); !errors.Is(err, ErrStalled) {
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
	e, err := OpenWith(t.TempDir(), Options{Logger: slog.New(slog.DiscardHandler), StallLimit: 200 * time.Millisecond,
		OnStuck: func(err error) { stuck <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// A synced write that never returns, as on a hung disk.
	e.health.syncMu.Lock()
	e.health.inFlight = map[uint64]time.Time{1: time.Now()}
	e.health.syncMu.Unlock()
	select {
	case err := <-stuck:
		if !errors.Is(err, ErrStalled) {
			t.Fatalf("OnStuck(%v)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stuck synced write was never reported")
	}
	if err := e.Health(); !errors.Is(err, ErrStalled) {
		t.Fatalf("health of a stuck engine: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if len(stuck) != 0 {
		t.Fatal("OnStuck called twice")
	}
}
