package groupserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// Client writes are proposed in batches: one goroutine per replica takes
// the writes queued while its previous proposal was being appended and
// proposes them as one log entry (grouppb.Command_Writes). Nothing waits
// for a batch to fill: under light load every write is its own entry, under
// heavy load the time one proposal takes is the time the next batch
// gathers. A batch costs raft one proposal, one entry to persist, send and
// apply, instead of one per write; the state machine still gives each
// write its own outcome and session record (see group.StateMachine.Apply).
const (
	maxBatchWrites = 256
	// maxBatchBytes bounds a batch's keys and values (a write larger than
	// it is proposed alone): about raft's MaxSizePerMsg, so one batch fits
	// in one append message.
	maxBatchBytes = 1 << 20
	// maxProposalWait bounds the wait for raft to take a batch (its
	// callers' own deadlines end it sooner: see batchWaiters).
	maxProposalWait = 30 * time.Second
)

// queuedWrite is one client write waiting to be proposed.
type queuedWrite struct {
	ctx context.Context // the caller's: once every caller of a batch gave up, nothing waits for it
	req *kvpb.WriteRequest
	out chan writeOutcome // buffered: the batch's waiter never blocks

	// state tells the caller and the batcher which of them counts a
	// caller that gives up (see batchWaiters): the first to move it from
	// queued, to gaveUp (the caller) or to proposed (the batcher, which
	// sets waiters first).
	state   atomic.Int32
	waiters *batchWaiters
}

// A queuedWrite's states.
const (
	queued   = iota // not in a batch yet
	proposed        // in a batch: its caller leaves waiters if it gives up
	gaveUp          // its caller gave up before the batcher took it: not proposed
)

// batchWaiters counts the callers of a proposed batch that still wait for
// it: once none does, cancel ends the batch's wait (and the proposal, if
// raft has not taken it yet). A caller that gives up counts itself out;
// callers that receive their outcome never do, and the batch's waiter
// cancels the wait then.
type batchWaiters struct {
	n      atomic.Int64
	cancel context.CancelFunc
}

func (b *batchWaiters) leave(n int64) {
	if b.n.Add(-n) == 0 {
		b.cancel()
	}
}

type writeOutcome struct {
	v   any // the state machine's outcome: nil, an error or a *group.WriteResult
	err error
	at  time.Time // when it was known: a batched write's latency ends there
}

func writeBytes(w *kvpb.WriteRequest) int {
	return len(w.GetKey()) + len(w.GetValue()) + len(w.GetIfValue())
}

// queuedWrites recycles queuedWrite and its channel: a write goes back
// once its caller received its outcome, the one send the batcher makes to
// it (a write whose caller gave up first may still be sent to later, and
// is left to the GC).
var queuedWrites = sync.Pool{New: func() any { return &queuedWrite{out: make(chan writeOutcome, 1)} }}

// errQueueFull is queueWrite's answer, not waiting, when the queue has no
// room: req was not queued.
var errQueueFull = errors.New("the write queue is full")

// errStopping answers a write the replica will never propose: it is
// stopping (certainly not applied).
var errStopping = fmt.Errorf("%w: the replica is stopping", kvpb.ErrNotReady)

// queueWrite queues req for the next batch, waiting (until ctx ends) for
// room in the queue, or, with wait false, failing at once with
// errQueueFull; awaitWrite, with the same ctx, then returns its outcome.
// Apart, they let one goroutine queue several writes (a KV.Batch) before
// it waits for any. An error means req was not queued: certainly not
// applied.
func (s *Server) queueWrite(ctx context.Context, req *kvpb.WriteRequest, wait bool) (*queuedWrite, error) {
	if !wait {
		// A send that need not wait may win over an ended deadline or a
		// stop: look at them first.
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.ctx.Err() != nil {
			return nil, errStopping
		}
	}
	w := queuedWrites.Get().(*queuedWrite)
	w.ctx, w.req = ctx, req
	var err error
	if wait {
		select {
		case s.writes <- w:
			return w, nil
		case <-ctx.Done():
			err = ctx.Err()
		case <-s.ctx.Done():
			err = errStopping
		}
	} else {
		select {
		case s.writes <- w:
			return w, nil
		default:
			err = errQueueFull
		}
	}
	w.ctx, w.req = nil, nil
	queuedWrites.Put(w) // never queued
	return nil, err
}

// awaitWrite returns the outcome of w, queued by queueWrite with ctx, and
// when it was known, and recycles w. Errors are those of
// raftnode.Node.Propose (certainly not applied, or outcome unknown) or the
// write's own refusal.
func (s *Server) awaitWrite(ctx context.Context, w *queuedWrite) (*group.WriteResult, time.Time, error) {
	var o writeOutcome
	select {
	case o = <-w.out: // an outcome already there wins over a deadline passed since
	default:
		stopping := s.ctx.Done()
	wait:
		for {
			select {
			case o = <-w.out:
				break wait
			case <-ctx.Done():
				if !w.state.CompareAndSwap(queued, gaveUp) { // proposed: count itself out of the batch
					w.waiters.leave(1)
				}
				return nil, time.Now(), ctx.Err()
			case <-stopping:
				// The batcher has stopped: a write it never took will
				// never be proposed (it skips one given up), and is
				// certainly not applied; a proposed one gets its outcome
				// (the node fails its proposals when it stops).
				if w.state.CompareAndSwap(queued, gaveUp) {
					return nil, time.Now(), errStopping
				}
				stopping = nil
			}
		}
	}
	w.ctx, w.req, w.waiters = nil, nil, nil
	w.state.Store(queued)
	queuedWrites.Put(w)
	if o.at.IsZero() {
		o.at = time.Now()
	}
	if o.err != nil {
		return nil, o.at, o.err
	}
	switch v := o.v.(type) {
	case error:
		return nil, o.at, v
	case *group.WriteResult:
		return v, o.at, nil
	}
	return &group.WriteResult{Succeeded: true}, o.at, nil
}

// batchWrites is the batcher: it runs until the server stops.
func (s *Server) batchWrites() {
	defer s.wg.Done()
	for {
		var first *queuedWrite
		select {
		case first = <-s.writes:
		case <-s.ctx.Done():
			return
		}
		batch, size := []*queuedWrite{first}, writeBytes(first.req)
	gather:
		for len(batch) < maxBatchWrites && size < maxBatchBytes {
			select {
			case w := <-s.writes:
				batch = append(batch, w)
				size += writeBytes(w.req)
			default:
				break gather
			}
		}
		s.proposeBatch(batch)
	}
}

// proposeBatch proposes the writes whose callers still wait, as one entry,
// and hands the outcomes to them once it applies; it returns once raft has
// taken the entry (or refused it).
func (s *Server) proposeBatch(batch []*queuedWrite) {
	// Raft is given the entry while any caller still waits (the batcher
	// holds every later write meanwhile: raft blocks a proposal while no
	// leader is known), for maxProposalWait at most, until the replica
	// stops.
	waitCtx, stopWaiting := context.WithCancel(context.Background())
	waiters := &batchWaiters{cancel: stopWaiting}
	waiters.n.Store(int64(len(batch))) // the callers not proposed are counted out below
	live := batch[:0]
	for _, w := range batch {
		w.waiters = waiters
		// A caller that gave up is not proposed.
		if w.ctx.Err() == nil && w.state.CompareAndSwap(queued, proposed) {
			live = append(live, w)
		}
	}
	waiters.leave(int64(len(batch) - len(live)))
	if len(live) == 0 {
		return
	}
	cmd := &grouppb.Command{Op: &grouppb.Command_Write{Write: live[0].req}}
	if len(live) > 1 {
		ws := make([]*kvpb.WriteRequest, len(live))
		for i, w := range live {
			ws[i] = w.req
		}
		cmd.Op = &grouppb.Command_Writes{Writes: &grouppb.WriteBatch{Writes: ws}}
	}
	s.cfg.Metrics.batched(len(live))
	ctx, cancel := context.WithTimeout(waitCtx, maxProposalWait)
	unlink := context.AfterFunc(s.ctx, cancel)
	p, err := s.submit(ctx, cmd)
	unlink()
	cancel()
	if err != nil {
		stopWaiting()
		now := time.Now()
		for _, w := range live {
			w.out <- writeOutcome{err: err, at: now}
		}
		return
	}
	go func() {
		// Not bounded by the node alone: it fails every pending proposal
		// when it stops or loses leadership, but a follower whose
		// forwarded batch the leader never received (lost message,
		// leadership transfer) would wait for as long as that leader
		// lasts.
		defer stopWaiting()
		v, err := p.Wait(waitCtx)
		now := time.Now()
		outcomes, isBatch := v.([]any)
		for i, w := range live {
			o := writeOutcome{v: v, err: err, at: now}
			if isBatch && len(outcomes) == len(live) {
				o.v = outcomes[i]
			}
			w.out <- o
		}
	}()
}
