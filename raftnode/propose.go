package raftnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// Propose replicates cmd and returns the value the state machine produced
// for it once it is applied on this member. A follower forwards it to its
// leader (Raft's proposal forwarding); a member that knows no leader fails
// with *rpcerr.NotLeaderError, rpcerr.ErrProposalDropped or
// rpcerr.ErrStopped when the entry is certainly not applied, and
// rpcerr.ErrLeaderChanged, rpcerr.ErrStoppedInFlight or the context's error
// when the outcome is unknown (see rpcerr.CertainlyNotApplied).
func (n *Node) Propose(ctx context.Context, cmd []byte) (any, error) {
	p, err := n.Submit(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Pending is a submitted proposal not yet known to be applied.
type Pending struct {
	n  *Node
	id uint64
	ch chan proposalResult
}

// Submit proposes cmd and returns once it is appended to this member's log
// (on the leader) or forwarded to the leader (on a follower), so a caller
// can keep several proposals in flight. Proposals one
// goroutine submits one after another are appended, and applied, in that
// order. Errors are those of Propose.
func (n *Node) Submit(ctx context.Context, cmd []byte) (*Pending, error) {
	return n.submit(ctx, cmd, false)
}

// ProposalRoom is the room SubmitFramed needs before a command.
const ProposalRoom = binary.MaxVarintLen64

// SubmitFramed is Submit of the command buf[ProposalRoom:], encoded by
// the caller after ProposalRoom bytes of room: the entry's header is
// written into that room, so the command is not copied. buf is the
// node's once passed.
func (n *Node) SubmitFramed(ctx context.Context, buf []byte) (*Pending, error) {
	if len(buf) < ProposalRoom {
		return nil, fmt.Errorf("raftnode: a framed proposal of %d bytes has no room for its header", len(buf))
	}
	return n.submit(ctx, buf, true)
}

func (n *Node) submit(ctx context.Context, cmd []byte, framed bool) (*Pending, error) {
	select {
	case <-n.stopc:
		return nil, rpcerr.ErrStopped
	default:
	}
	if !n.isLeader.Load() && n.leader.Load() == 0 {
		return nil, &rpcerr.NotLeaderError{}
	}
	n.active()
	id, ch := n.proposals.add()
	data := encodeProposal
	if framed {
		data = frameProposal
	}
	if err := n.rn.Propose(ctx, data(id, cmd)); err != nil {
		n.proposals.forget(id)
		switch {
		case errors.Is(err, raft.ErrProposalDropped):
			n.proposals.dropped.Add(1)
			return nil, rpcerr.ErrProposalDropped
		case errors.Is(err, raft.ErrStopped):
			// raft may have taken the proposal just before it stopped
			// (its Propose waits for the step's result and the stop at
			// once): not provably absent from the log.
			return nil, rpcerr.ErrStoppedInFlight
		}
		return nil, err
	}
	return &Pending{n: n, id: id, ch: ch}, nil
}

// Wait returns the proposal's result once it is applied (see Propose).
func (p *Pending) Wait(ctx context.Context) (any, error) {
	select {
	case r := <-p.ch:
		return r.value, r.err
	case <-ctx.Done():
		p.n.proposals.forget(p.id)
		return nil, ctx.Err()
	case <-p.n.stopc:
		p.n.proposals.forget(p.id)
		// The entry is in this node's log and maybe in others': a new
		// leader may still commit it.
		return nil, rpcerr.ErrStoppedInFlight
	}
}

// A log entry's data is the proposal id (uvarint) followed by the command.
func encodeProposal(id uint64, cmd []byte) []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(cmd))
	b = binary.AppendUvarint(b, id)
	return append(b, cmd...)
}

// frameProposal is encodeProposal of buf[ProposalRoom:], in place: the
// id goes at the end of the room before the command.
func frameProposal(id uint64, buf []byte) []byte {
	start := ProposalRoom - uvarintLen(id)
	binary.PutUvarint(buf[start:], id)
	return buf[start:]
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

func decodeProposal(data []byte) (id uint64, cmd []byte, err error) {
	id, k := binary.Uvarint(data)
	if k <= 0 {
		return 0, nil, errors.New("malformed proposal header")
	}
	return id, data[k:], nil
}

type proposalResult struct {
	value any
	err   error
}

// proposals matches applied entries to the callers waiting for them.
type proposals struct {
	next    atomic.Uint64 // last id handed out; starts at a random value
	dropped atomic.Uint64 // proposals that failed with rpcerr.ErrProposalDropped
	mu      sync.Mutex
	waiting map[uint64]chan proposalResult // by proposal id
	byIndex map[uint64]uint64              // log index -> proposal id, leader's own entries
}

func (ps *proposals) init() {
	ps.waiting = make(map[uint64]chan proposalResult)
	ps.byIndex = make(map[uint64]uint64)
}

// pending reports whether a proposal waits for its outcome.
func (ps *proposals) pending() bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.waiting) > 0
}

func (ps *proposals) add() (uint64, chan proposalResult) {
	id := ps.next.Add(1)
	if id == 0 { // 0 marks entries without a proposer
		id = ps.next.Add(1)
	}
	ch := make(chan proposalResult, 1)
	ps.mu.Lock()
	ps.waiting[id] = ch
	ps.mu.Unlock()
	return id, ch
}

func (ps *proposals) forget(id uint64) {
	ps.mu.Lock()
	delete(ps.waiting, id)
	ps.mu.Unlock()
}

// track notes at which index the leader appended each of its proposals, so
// that a different entry later committed at that index proves the proposal
// lost.
func (ps *proposals) track(ents []*raftpb.Entry) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, e := range ents {
		if e.GetType() != raftpb.EntryType_EntryNormal || len(e.GetData()) == 0 {
			continue
		}
		if id, _, err := decodeProposal(e.GetData()); err == nil {
			if _, ok := ps.waiting[id]; ok {
				ps.byIndex[e.GetIndex()] = id
			}
		}
	}
}

// complete delivers the results of applied entries; ids[i] is the proposal
// id of ents[i] (0 for none).
func (ps *proposals) complete(ents []*raftpb.Entry, ids []uint64, results []any) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for i, e := range ents {
		if owner, ok := ps.byIndex[e.GetIndex()]; ok {
			delete(ps.byIndex, e.GetIndex())
			if owner != ids[i] {
				ps.dropped.Add(1)
				ps.finish(owner, proposalResult{err: rpcerr.ErrProposalDropped})
			}
		}
		if ids[i] != 0 {
			var v any
			if i < len(results) {
				v = results[i]
			}
			ps.finish(ids[i], proposalResult{value: v})
		}
	}
}

func (ps *proposals) finish(id uint64, r proposalResult) {
	if ch, ok := ps.waiting[id]; ok {
		delete(ps.waiting, id)
		ch <- r
	}
}

func (ps *proposals) failAll(err error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for id, ch := range ps.waiting {
		delete(ps.waiting, id)
		ch <- proposalResult{err: err}
	}
	clear(ps.byIndex)
}

func (ps *proposals) String() string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return fmt.Sprintf("%d pending", len(ps.waiting))
}
