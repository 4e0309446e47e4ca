package raftnode_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shardkv/shardkv/raftnode"
)

// keepProposing proposes cmd(i) for i = 0, 1, ... until stop is closed,
// calling acked(i) for each one applied; with untilError it also stops at
// the first failure (an unknown outcome would make what follows ambiguous).
// The function it returns waits for it to end.
func keepProposing(c *cluster, stop chan struct{}, cmd func(i int) []byte, acked func(i int), untilError bool) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.propose(ctx, cmd(i))
			cancel()
			switch {
			case err == nil && acked != nil:
				acked(i)
			case err != nil && untilError:
				return
			}
		}
	}()
	return func() { <-done }
}

// keepWriting appends tokens "[i]" to key "bg" until stop is closed or an
// append fails; the function it returns waits and gives what was
// acknowledged.
func keepWriting(c *cluster, stop chan struct{}) func() string {
	var mu sync.Mutex
	acked := ""
	wait := keepProposing(c, stop, func(i int) []byte { return encodeCmd('a', "bg", fmt.Sprintf("[%d]", i)) },
		func(i int) { mu.Lock(); acked += fmt.Sprintf("[%d]", i); mu.Unlock() }, true)
	return func() string { wait(); mu.Lock(); defer mu.Unlock(); return acked }
}

// TestCompactAfterRestoreStaysInLog: a follower restored from a snapshot
// whose image is ahead of the log, then sent small appends, compacts only
// up to what its log holds (it once compacted at the image's applied index
// and raft panicked).
func TestCompactAfterRestoreStaysInLog(t *testing.T) {
	c := newCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries = 20
		cfg.CatchUpEntries = 2
		cfg.MaxSizePerMsg = 1
		cfg.MaxInflightMsgs = 1
	})
	f := c.crashFollower()
	mustAppendAll(t, c, 2, 100)
	stop := make(chan struct{})
	done := keepWriting(c, stop)
	time.Sleep(50 * time.Millisecond)
	c.start(f)
	time.Sleep(3 * time.Second)
	close(stop)
	bg := done()
	c.waitConverged(map[string]string{"bg": bg})
	t.Logf("restores on %d: %d", f, c.sm(f).restoreCount())
}

// TestSnapshotMetadataNeverAheadOfImage: a snapshot image made slowly
// while the log is compacted meanwhile is never sent with the newer
// snapshot's index (the receiver would skip the entries between).
func TestSnapshotMetadataNeverAheadOfImage(t *testing.T) {
	c := newCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries = 10
		cfg.CatchUpEntries = 2
	})
	f := c.crashFollower()
	mustAppendAll(t, c, 2, 60)
	snapshotDelay.Store(int64(500 * time.Millisecond))
	stop := make(chan struct{})
	done := keepWriting(c, stop)
	time.Sleep(50 * time.Millisecond)
	c.start(f)
	time.Sleep(3 * time.Second)
	snapshotDelay.Store(0)
	close(stop)
	bg := done()
	t.Logf("restores on %d: %d", f, c.sm(f).restoreCount())
	c.waitConverged(map[string]string{"bg": bg})
}

// TestCompactAfterRestoreLargeEntries is TestCompactAfterRestoreStaysInLog
// with default message sizes and 200 KB entries.
func TestCompactAfterRestoreLargeEntries(t *testing.T) {
	c := newCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries = 40
		cfg.CatchUpEntries = 5
	})
	f := c.crashFollower()
	big := string(make([]byte, 200<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 60; i++ {
		if _, err := c.propose(ctx, encodeCmd('p', fmt.Sprintf("big%d", i%5), big)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	wait := keepProposing(c, stop, func(i int) []byte { return encodeCmd('p', fmt.Sprintf("big%d", i%5), big) }, nil, false)
	c.start(f)
	time.Sleep(4 * time.Second)
	close(stop)
	wait()
	t.Logf("restores on %d: %d", f, c.sm(f).restoreCount())
}
