package raftnode

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// ReadIndex returns once this member's state machine reflects every write
// that completed before the call: reads made after it are linearizable.
// Concurrent callers share one read-index round.
func (n *Node) ReadIndex(ctx context.Context) error {
	b := n.reads.join()
	select {
	case n.reads.wake <- struct{}{}:
	default:
	}
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.stopc:
		return rpcerr.ErrStopped
	}
}

type readBatch struct {
	done chan struct{}
	err  error
}

// reads batches ReadIndex callers into rounds.
type reads struct {
	wake   chan struct{}
	states chan raft.ReadState
	lead   chan struct{} // a token when the known leader changed
	mu     sync.Mutex
	next   *readBatch
	seq    uint64 // read loop only
}

func (r *reads) init() {
	r.wake = make(chan struct{}, 1)
	r.states = make(chan raft.ReadState, 16)
	r.lead = make(chan struct{}, 1)
	r.next = &readBatch{done: make(chan struct{})}
}

func (r *reads) join() *readBatch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next
}

func (r *reads) take() *readBatch {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.next
	r.next = &readBatch{done: make(chan struct{})}
	return b
}

// leaderChanged tells a read-index round in progress to ask again: its
// request may have died with the old leader.
func (r *reads) leaderChanged() {
	select {
	case r.lead <- struct{}{}:
	default:
	}
}

// deliver passes a read state from the Ready loop to the read loop; a state
// nobody waits for any more is dropped.
func (r *reads) deliver(rs raft.ReadState) {
	select {
	case r.states <- rs:
	default:
	}
}

// readLoop runs one read-index round at a time for whoever joined the
// current batch.
func (n *Node) readLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.reads.wake:
		case <-n.stopc:
			return
		}
		b := n.reads.take()
		index, err := n.confirmReadIndex()
		if err != nil {
			b.err = err
			close(b.done)
			continue
		}
		// setApplied closes done once the state machine reflects index:
		// no goroutine per round waits for it.
		n.closeWhenApplied(index, b.done)
	}
}

// confirmReadIndex asks Raft for a read index, asking again when an answer
// does not come within two election timeouts (the request or the answer was
// lost, or leadership moved), and giving up after five tries.
func (n *Node) confirmReadIndex() (uint64, error) {
	n.reads.seq++
	rctx := binary.BigEndian.AppendUint64(nil, n.reads.seq)
	retry := 2 * time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
	for attempt := 0; attempt < 5; attempt++ {
		// A leader change noticed before this request is sent cannot
		// concern it: drop the notice, or the wait below would ask again
		// at once, doubling the heartbeat round.
		select {
		case <-n.reads.lead:
		default:
		}
		if n.leader.Load() == 0 {
			return 0, rpcerr.ErrReadTimeout // raft would drop the request: fail now
		}
		n.active() // the read round needs heartbeats, and a leader that ticks
		ctx, cancel := context.WithTimeout(context.Background(), retry)
		err := n.rn.ReadIndex(ctx, rctx)
		cancel()
		if err != nil && err != context.DeadlineExceeded {
			return 0, rpcerr.ErrStopped
		}
		timer := time.NewTimer(retry)
	wait:
		for {
			select {
			case rs := <-n.reads.states:
				if string(rs.RequestCtx) == string(rctx) {
					timer.Stop()
					return rs.Index, nil
				}
			case <-timer.C:
				break wait
			case <-n.reads.lead:
				// Ask the new leader at once; with none known, fail now
				// so the caller can try another replica.
				timer.Stop()
				if n.leader.Load() == 0 {
					return 0, rpcerr.ErrReadTimeout
				}
				break wait
			case <-n.stopc:
				timer.Stop()
				return 0, rpcerr.ErrStopped
			}
		}
	}
	return 0, rpcerr.ErrReadTimeout
}
