package raftnode

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// applyTask is one unit of work for the apply goroutine: committed entries,
// or a snapshot to restore (done receives the outcome).
type applyTask struct {
	entries  []*raftpb.Entry
	snapshot *raftpb.Snapshot
	compact  bool // compact the log now, keeping no catch-up entries
	done     chan error
}

// appliedWaiterSet lives on the node; see appliedWaiter and setApplied.
type appliedWaiterSet struct {
	mu      sync.Mutex
	waiters []appliedWait
}

type appliedWait struct {
	index uint64
	ch    chan struct{}
}

// restore hands a snapshot from the leader to the apply goroutine (so it
// runs after every entry queued before it) and waits for the state machine
// to reflect it.
func (n *Node) restore(snap *raftpb.Snapshot) error {
	done := make(chan error, 1)
	select {
	case n.applyc <- applyTask{snapshot: snap, done: done}:
	case <-n.stopc:
		return rpcerr.ErrStopped
	}
	select {
	case err := <-done:
		return err
	case <-n.stopc:
		return rpcerr.ErrStopped
	}
}

func (n *Node) applyLoop() {
	defer n.wg.Done()
	for {
		select {
		case t := <-n.applyc:
			var err error
			n.smMu.Lock()
			switch {
			case t.snapshot != nil:
				err = n.applySnapshot(t.snapshot)
				t.done <- err
			case t.compact:
				t.done <- n.compact(0)
			default:
				err = n.applyEntries(t.entries)
				if err == nil {
					// A failed batch stays counted: the Ready loop
					// never applies past it (queueApply).
					n.applyQueued.Add(-1)
				}
				if t.done != nil {
					t.done <- err
				}
			}
			if err != nil {
				n.fatal(err) // before the Ready loop can take smMu
				n.smMu.Unlock()
				return
			}
			n.smMu.Unlock()
		case <-n.stopc:
			return
		}
	}
}

func (n *Node) applySnapshot(snap *raftpb.Snapshot) error {
	start := time.Now()
	env, image, err := unwrapSnapshot(snap.GetData())
	if err != nil {
		return fmt.Errorf("restore snapshot at %d: %w", snap.GetMetadata().GetIndex(), err)
	}
	if err := n.learnFounders(env.Founders); err != nil {
		return fmt.Errorf("restore snapshot at %d: record the founders: %w", snap.GetMetadata().GetIndex(), err)
	}
	if err := n.sm.Restore(image); err != nil {
		return fmt.Errorf("restore snapshot at %d: %w", snap.GetMetadata().GetIndex(), err)
	}
	n.memberMu.Lock()
	n.confState = snap.GetMetadata().GetConfState()
	// Only members this one has no address for are taken from the
	// leader's book: the leader's addresses are how it reaches them, and
	// replicas may see one another at different addresses (proxies, NAT).
	book := maps.Clone(n.addrs)
	for id, addr := range env.Addrs {
		if _, ok := book[id]; !ok {
			book[id] = addr
		}
	}
	n.addrs = book
	// The ids the group removed in the entries the snapshot skips (saved
	// below with the membership, before the snapshot is recorded, synced).
	n.removed = unionSorted(n.removed, env.Removed)
	n.memberMu.Unlock()
	n.publishAddrs(book)
	n.logApplied = snap.GetMetadata().GetIndex()
	n.membersChanged = true
	if err := n.saveMembers(); err != nil {
		return fmt.Errorf("record membership: %w", err)
	}
	n.snapIndex, n.bytesSinceSnap = snap.GetMetadata().GetIndex(), 0
	n.setApplied(n.sm.Applied())
	n.log.Info("restored snapshot from leader", "index", n.snapIndex,
		"applied", n.sm.Applied(), "bytes", len(snap.GetData()), "took", time.Since(start))
	return nil
}

func (n *Node) applyEntries(raw []*raftpb.Entry) error {
	ents := make([]Entry, len(raw))
	ids := make([]uint64, len(raw))
	for i, e := range raw {
		ents[i] = Entry{Index: e.GetIndex(), Term: e.GetTerm()}
		switch e.GetType() {
		case raftpb.EntryType_EntryNormal:
			if len(e.GetData()) == 0 {
				continue
			}
			id, cmd, err := decodeProposal(e.GetData())
			if err != nil {
				return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
			}
			ids[i], ents[i].Data = id, cmd
		case raftpb.EntryType_EntryConfChange, raftpb.EntryType_EntryConfChangeV2:
			// Applied to raft here, in log order; the state machine sees
			// an empty entry (it only advances the applied index).
			id, err := n.applyConfChange(e)
			if err != nil {
				return err
			}
			ids[i] = id
		}
	}
	results, err := n.sm.Apply(ents)
	if err != nil {
		return fmt.Errorf("apply entries %d..%d: %w", ents[0].Index, ents[len(ents)-1].Index, err)
	}
	changed := n.membersChanged
	if err := n.saveMembers(); err != nil {
		return fmt.Errorf("record membership: %w", err)
	}
	n.logApplied = raw[len(raw)-1].GetIndex()
	for _, e := range raw {
		n.bytesSinceSnap += uint64(len(e.GetData()))
	}
	// The applied index moves before the proposers hear their results: one
	// that goes on at once sees its entry applied (a membership change
	// right after another must not find the first still pending).
	last := ents[len(ents)-1].Index
	n.setApplied(max(last, n.sm.Applied()))
	n.proposals.complete(raw, ids, results)
	if changed {
		// A snapshot that predates a membership change names the old
		// members: a member added by it would refuse one (raft requires a
		// snapshot's configuration to include its receiver). Take a new
		// one now, so every snapshot sent from here on names it.
		return n.compact(n.cfg.CatchUpEntries)
	}
	return n.maybeCompact()
}

// maybeCompact takes a snapshot (metadata only: the state machine's own keys
// are the data) and drops old log entries once enough entries were applied.
func (n *Node) maybeCompact() error {
	if n.logApplied < n.snapIndex+n.cfg.SnapshotEntries && n.bytesSinceSnap < n.cfg.SnapshotBytes {
		return nil
	}
	return n.compact(n.cfg.CatchUpEntries)
}

// Compact takes a snapshot at the applied index now and drops every log
// entry it covers, whatever the thresholds: for operators reclaiming space
// and for tests measuring what a compacted replica stores. Followers that
// are behind will catch up by snapshot.
func (n *Node) Compact(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case n.applyc <- applyTask{compact: true, done: done}:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopc:
		return rpcerr.ErrStopped
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopc:
		return rpcerr.ErrStopped
	}
}

// compact takes a snapshot at logApplied, the last log entry this node
// handed to raft and the state machine, and drops the log up to keep
// entries before it. Never at the state machine's applied index, which a
// snapshot from the leader may have put above the log (and above the
// membership this node has applied).
func (n *Node) compact(keep uint64) error {
	applied := n.logApplied
	if applied <= n.snapIndex {
		return nil
	}
	snap, err := n.mem.CreateSnapshot(applied, n.confState, nil)
	if errors.Is(err, raft.ErrSnapOutOfDate) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot at %d: %w", applied, err)
	}
	compactTo := applied - min(keep, applied)
	if err := n.disk.Compact(snap.GetMetadata(), compactTo); err != nil {
		return fmt.Errorf("compact log to %d: %w", compactTo, err)
	}
	if err := n.mem.Compact(compactTo); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return fmt.Errorf("compact log to %d: %w", compactTo, err)
	}
	n.snapIndex, n.bytesSinceSnap = applied, 0
	n.log.Debug("compacted raft log", "snapshot", applied, "first_kept", compactTo+1)
	return nil
}

// sendSnapshot fills a MsgSnap with the state machine's current image and
// sends it, then tells Raft how it went.
func (n *Node) sendSnapshot(m *raftpb.Message) {
	defer n.wg.Done()
	status := raft.SnapshotFailure
	defer func() { n.rn.ReportSnapshot(m.GetTo(), status) }()
	// Read before the image is made: the latest snapshot's index is then at
	// most the image's applied index (never a hole between the two).
	latest, latestErr := n.mem.Snapshot()
	image, err := n.sm.Snapshot()
	if err == nil {
		image, err = n.wrapSnapshot(image)
	}
	if err != nil {
		n.log.Error("make snapshot for follower", "to", m.GetTo(), "err", err)
		return
	}
	out := proto.Clone(m).(*raftpb.Message)
	out.Snapshot.Data = image
	// raft may have made m from an older snapshot than the latest (taken
	// since, after a membership change the receiver needs): send the
	// latest's metadata. The image is at least as new (read after it); the
	// receiver skips the entries its image already holds.
	if latestErr == nil && latest.GetMetadata().GetIndex() > out.GetSnapshot().GetMetadata().GetIndex() {
		out.Snapshot.Metadata = latest.GetMetadata()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	go func() {
		select {
		case <-n.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	if err := n.tr.SendSnapshot(ctx, out); err != nil {
		n.log.Warn("send snapshot", "to", m.GetTo(), "err", err)
		return
	}
	status = raft.SnapshotFinish
	n.log.Info("sent snapshot", "to", m.GetTo(), "index", m.GetSnapshot().GetMetadata().GetIndex(),
		"bytes", len(image), "took", time.Since(start))
}

// appliedWaiter returns a channel closed once the applied index reaches
// index (already closed if it has). It never returns nil: a caller that
// read the applied index before asking must still be woken if the index
// moved in between.
func (n *Node) appliedWaiter(index uint64) chan struct{} {
	ch := make(chan struct{})
	n.closeWhenApplied(index, ch)
	return ch
}

// closeWhenApplied closes ch once the applied index reaches index: at once
// if it has, else from setApplied, so no goroutine waits for it.
func (n *Node) closeWhenApplied(index uint64, ch chan struct{}) {
	n.waiters.mu.Lock()
	defer n.waiters.mu.Unlock()
	if n.applied.Load() >= index {
		close(ch)
		return
	}
	n.waiters.waiters = append(n.waiters.waiters, appliedWait{index: index, ch: ch})
}

func (n *Node) setApplied(index uint64) {
	n.waiters.mu.Lock()
	defer n.waiters.mu.Unlock()
	n.applied.Store(index)
	kept := n.waiters.waiters[:0]
	for _, w := range n.waiters.waiters {
		if w.index <= index {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(n.waiters.waiters[len(kept):])
	n.waiters.waiters = kept
}
