package raftnode

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// ReadIndex returns once this member's state machine reflects every write
// that completed before the call: reads made after it are linearizable.
// Concurrent callers share one read-index round.
//
// Rounds run one at a time, driven by whoever has an event for them: the
// first caller of an idle member asks raft itself; the Ready loop, which
// receives raft's answer (a ReadState) or notices a leader change, finishes
// the round or asks again and starts the next round for the callers that
// joined meanwhile; a timer asks again when no answer came. No goroutine
// waits on a round's behalf, so a round costs no hand-offs beyond raft's
// own.
func (n *Node) ReadIndex(ctx context.Context) error {
	b, start := n.reads.join()
	if start != nil {
		n.askRead(start, 0)
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

// retryRead is how long a read-index round waits for raft's answer before
// asking again: two election timeouts (the request or the answer was lost,
// or leadership moved).
func (c *Config) retryRead() time.Duration {
	return 2 * time.Duration(c.ElectionTicks) * c.TickInterval
}

// readAttempts is how many times a round asks raft before it fails with
// rpcerr.ErrReadTimeout.
const readAttempts = 5

// readBatch is the callers of one round: done closes once the applied index
// reaches the round's read index, or with err set when the round failed.
type readBatch struct {
	done    chan struct{}
	err     error
	waiters int // callers that joined; reads.mu
}

// readRound is the round in flight.
type readRound struct {
	batch     *readBatch
	rctx      []byte      // raft's request context: reads.base, then the round's number (8 bytes big-endian each)
	attempts  int         // requests sent to raft so far
	askedLead uint64      // the leader known when the last request was sent
	askedTerm uint64      // and the term
	timer     *time.Timer // asks again when the last request went unanswered
}

// reads batches ReadIndex callers into rounds, one round in flight at a
// time.
type reads struct {
	mu       sync.Mutex
	next     *readBatch // callers waiting for the next round
	inFlight *readRound // nil: no round in flight
	seq      uint64     // the last round's number
	// base starts every request context: random for each Start, so that
	// an answer to a request from an earlier run of this member (still on
	// its way when the member restarted in-process) matches no round of
	// this run, whose numbers start again at 1.
	base [8]byte
}

func (r *reads) init() {
	r.next = &readBatch{done: make(chan struct{})}
	_, _ = rand.Read(r.base[:])
}

// join adds a caller to the next round and returns its batch; if no round
// is in flight it also starts that round, which the caller must ask for.
func (r *reads) join() (*readBatch, *readRound) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.next
	b.waiters++
	if r.inFlight != nil {
		return b, nil
	}
	return b, r.startLocked()
}

// startLocked makes the next batch the round in flight; mu held.
func (r *reads) startLocked() *readRound {
	r.seq++
	// base is full (len = cap): appending copies it.
	rd := &readRound{batch: r.next, rctx: binary.BigEndian.AppendUint64(r.base[:], r.seq)}
	r.next = &readBatch{done: make(chan struct{})}
	r.inFlight = rd
	return rd
}

// askRead sends round rd's request to raft (again), unless rd is over or
// has sent other than sent requests already (another event asked for it
// meanwhile), and arms a timer that asks again if no answer comes. A
// request that cannot be sent fails the round; the next round, if callers
// wait for one, is then asked for in turn.
func (n *Node) askRead(rd *readRound, sent int) {
	for ; rd != nil; sent = 0 {
		n.reads.mu.Lock()
		if n.reads.inFlight != rd || rd.attempts != sent {
			n.reads.mu.Unlock()
			return
		}
		var err error
		select {
		case <-n.stopc:
			err = rpcerr.ErrStopped
		default:
			if rd.attempts == readAttempts {
				err = rpcerr.ErrReadTimeout
			} else if n.leader.Load() == 0 {
				err = rpcerr.ErrReadTimeout // raft would drop the request: fail now
			}
		}
		if err != nil {
			rd = n.finishReadLocked(rd, 0, err)
			n.reads.mu.Unlock()
			continue
		}
		rd.attempts++
		rd.askedLead, rd.askedTerm = n.leader.Load(), n.term.Load()
		if rd.timer != nil {
			rd.timer.Stop()
		}
		attempt := rd.attempts
		rd.timer = time.AfterFunc(n.cfg.retryRead(), func() { n.askRead(rd, attempt) })
		n.reads.mu.Unlock()

		n.active() // the read round needs heartbeats, and a leader that ticks
		// Outside mu, so that joiners and the Ready loop's readState never
		// wait behind raft's work.
		if err := n.rn.ReadIndex(context.Background(), rd.rctx); err != nil {
			n.reads.mu.Lock()
			rd = n.finishReadLocked(rd, 0, rpcerr.ErrStopped)
			n.reads.mu.Unlock()
			continue
		}
		return
	}
}

// finishReadLocked ends round rd (if it is still in flight) at read index
// index, or with err, and returns the next round when callers wait for
// one, which the caller must ask for; reads.mu held.
func (n *Node) finishReadLocked(rd *readRound, index uint64, err error) *readRound {
	r := &n.reads
	if r.inFlight != rd {
		return nil
	}
	r.inFlight = nil
	if rd.timer != nil {
		rd.timer.Stop()
	}
	if err != nil {
		rd.batch.err = err
		close(rd.batch.done)
	} else {
		// setApplied closes done once the state machine reflects index.
		n.closeWhenApplied(index, rd.batch.done)
	}
	if r.next.waiters == 0 {
		return nil
	}
	return r.startLocked()
}

// readState takes raft's answer to a read-index request (from the Ready
// loop); an answer to a round that is over is dropped.
func (n *Node) readState(rctx []byte, index uint64) {
	n.reads.mu.Lock()
	rd := n.reads.inFlight
	var next *readRound
	if rd != nil && string(rd.rctx) == string(rctx) {
		next = n.finishReadLocked(rd, index, nil)
	}
	n.reads.mu.Unlock()
	n.askRead(next, 0)
}

// askReadAgain asks again at once for the round in flight (from the
// Ready loop, when the known leader or the term changed): its request may
// have died with the old leader, or with the leader's pending reads, which
// raft drops when it becomes leader again. A round whose last request
// already went to this leader in this term is left alone. With no leader
// known the round fails, so that callers can try another replica.
func (n *Node) askReadAgain() {
	n.reads.mu.Lock()
	rd := n.reads.inFlight
	if rd == nil || rd.attempts == 0 || rd.askedLead == n.leader.Load() && rd.askedTerm == n.term.Load() {
		n.reads.mu.Unlock()
		return
	}
	sent := rd.attempts
	n.reads.mu.Unlock()
	n.askRead(rd, sent)
}

// stopReads fails the round in flight with rpcerr.ErrStopped and stops its
// timer, so that nothing asks raft once Stop returned.
func (n *Node) stopReads() {
	n.reads.mu.Lock()
	defer n.reads.mu.Unlock()
	for rd := n.reads.inFlight; rd != nil; {
		rd = n.finishReadLocked(rd, 0, rpcerr.ErrStopped)
	}
}
