package raftnode

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// inlineNode is the raft.Node a member runs on: etcd raft's RawNode behind
// a mutex, doing raft's work in the goroutine that brings it (the
// transport's receive loop stepping a message, a proposer, the Ready loop
// ticking or advancing) rather than in a goroutine of its own.
//
// raft.RestartNode's node runs one more goroutine per member, and every
// input reaches it over a channel: a message stepped, a proposal, a read
// request, a tick, the Ready handed out and the Advance handed back each
// wake it and then wake the caller again. On a follower serving a
// read-index round that was four of the round's six goroutine hand-offs,
// each a futex wake-up and a context switch when the machine is busy (CPU
// per round, not latency, is what those cost). CockroachDB and TiKV drive
// RawNode under their replica's mutex in the same way.
//
// It keeps raft.Node's observable behaviour where raftnode depends on it:
//   - A proposal waits until a leader is known and returns raft's verdict;
//     one forwarded from a peer (Step of a MsgProp) does not wait for the
//     verdict. A member that a configuration change removed takes no more
//     proposals.
//   - A message that raft.Node drops (a local message type from the
//     network, a response from an unknown peer) or whose step fails is
//     dropped and its error ignored.
//   - One Ready at a time: the next is not taken until the last one is
//     advanced. A Ready is taken (RawNode.Ready, which accepts it) by the
//     input that produced it and waits in a one-slot channel for the Ready
//     loop, so the Ready loop is the only goroutine that wakes for it.
type inlineNode struct {
	id uint64

	mu       sync.Mutex
	raw      *raft.RawNode
	inFlight bool          // a Ready was taken and not advanced yet
	removed  bool          // a configuration change removed this member
	leaderc  chan struct{} // closed when a leader is known; nil: nobody waits

	readyc   chan raft.Ready // holds at most the one Ready in flight
	failed   func(error)     // told when raft panicked (guarded); nil: nobody
	stopped  atomic.Bool
	panicked atomic.Bool // raft panicked: its state is not to be used
	done     chan struct{}
	stop     sync.Once
}

var _ raft.Node = (*inlineNode)(nil)

// startInline is raft.RestartNode without the goroutine: c must describe
// a member whose Storage holds its state (raft.NewRawNode's error,
// impossible for a configuration withDefaults accepted, panics as
// RestartNode's does; a state raft refuses, by panicking, is an error
// matching ErrRaftPanicked). failed, if not nil, is told when raft
// panics later (guarded).
func startInline(c *raft.Config, failed func(error)) (n raft.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = nil, asRaftPanic(r)
		}
	}()
	raw, err := raft.NewRawNode(c)
	if err != nil {
		panic(err)
	}
	s := &inlineNode{id: c.ID, raw: raw, readyc: make(chan raft.Ready, 1), done: make(chan struct{}), failed: failed}
	// A restarted member may have committed entries to apply before any
	// input arrives: hand out its first Ready now, as raft.Node's loop does.
	s.mu.Lock()
	s.afterLocked()
	s.mu.Unlock()
	return s, nil
}

// guarded runs fn, which drives the RawNode with mu held, and stops the
// member if raft panics in it (raftLogger): raft's state is then not to
// be trusted, and the member takes no more input (as after Stop), but
// the panic, which a peer's message can cause (a member whose log lost
// entries it acknowledged: "tocommit(N) is out of range"), must not crash
// the process from whatever goroutine stepped the message: failed is
// told why, and the member's owner decides. Other panics go on. It
// reports whether raft panicked.
func (s *inlineNode) guarded(fn func()) (panicked bool) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		p := asRaftPanic(r)
		s.stopped.Store(true)
		s.panicked.Store(true)
		panicked = true
		if s.failed != nil {
			s.failed(p)
		}
	}()
	fn()
	return false
}

// do runs fn on the RawNode, then hands out a Ready if fn made one; after
// Stop it does nothing.
func (s *inlineNode) do(fn func(*raft.RawNode)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped.Load() {
		return
	}
	s.guarded(func() {
		fn(s.raw)
		s.afterLocked()
	})
}

// afterLocked runs after every input, with mu held: it wakes proposers
// waiting for a leader, and takes a Ready for the Ready loop when there is
// one and none is in flight (so the send never blocks).
func (s *inlineNode) afterLocked() {
	if s.leaderc != nil && s.raw.BasicStatus().Lead != raft.None {
		close(s.leaderc)
		s.leaderc = nil
	}
	if s.inFlight || s.stopped.Load() || !s.raw.HasReady() {
		return
	}
	s.inFlight = true
	s.readyc <- s.raw.Ready()
}

func (s *inlineNode) Tick() { s.do(func(r *raft.RawNode) { r.Tick() }) }

func (s *inlineNode) Campaign(context.Context) error {
	var err error
	s.do(func(r *raft.RawNode) { err = r.Campaign() })
	return err
}

func (s *inlineNode) Propose(ctx context.Context, data []byte) error {
	return s.propose(ctx, &raftpb.Message{Type: raftpb.MessageType_MsgProp.Enum(),
		Entries: []*raftpb.Entry{{Data: data}}}, true)
}

// propose steps a proposal once a leader is known, as raft.Node does; with
// wait it returns raft's verdict, else nil. A removed member's proposal
// waits until ctx ends, as raft.Node's does.
func (s *inlineNode) propose(ctx context.Context, msg *raftpb.Message, wait bool) error {
	for {
		s.mu.Lock()
		if s.stopped.Load() {
			s.mu.Unlock()
			return raft.ErrStopped
		}
		if !s.removed && s.raw.BasicStatus().Lead != raft.None {
			msg.From = &s.id
			var err error
			if s.guarded(func() {
				err = s.raw.Step(msg)
				s.afterLocked()
			}) {
				err = raft.ErrStopped
			}
			s.mu.Unlock()
			if !wait {
				return nil
			}
			return err
		}
		var ch chan struct{} // nil for a removed member: only ctx or Stop ends its wait
		if !s.removed {
			if s.leaderc == nil {
				s.leaderc = make(chan struct{})
			}
			ch = s.leaderc
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return raft.ErrStopped
		}
	}
}

func (s *inlineNode) ProposeConfChange(ctx context.Context, cc raftpb.ConfChangeI) error {
	m, err := confChangeMessage(cc)
	if err != nil {
		return err
	}
	return s.propose(ctx, m, true)
}

// confChangeMessage is the proposal of cc, as raft's confChangeToMsg
// builds it (unexported there).
func confChangeMessage(cc raftpb.ConfChangeI) (*raftpb.Message, error) {
	typ, data, err := raftpb.MarshalConfChange(cc)
	if err != nil {
		return nil, err
	}
	return &raftpb.Message{Type: raftpb.MessageType_MsgProp.Enum(),
		Entries: []*raftpb.Entry{{Type: typ.Enum(), Data: data}}}, nil
}

func (s *inlineNode) Step(ctx context.Context, msg *raftpb.Message) error {
	if s.stopped.Load() {
		return raft.ErrStopped
	}
	if raft.IsLocalMsg(msg.GetType()) && !raft.IsLocalMsgTarget(msg.GetFrom()) {
		return nil
	}
	if msg.GetType() == raftpb.MessageType_MsgProp {
		return s.propose(ctx, msg, false)
	}
	s.do(func(r *raft.RawNode) { _ = r.Step(msg) })
	return nil
}

func (s *inlineNode) Ready() <-chan raft.Ready { return s.readyc }

func (s *inlineNode) Advance() {
	s.do(func(r *raft.RawNode) {
		r.Advance(raft.Ready{})
		s.inFlight = false
	})
}

// ApplyConfChange applies cc. A member that cc removes (it was in the
// configuration and is in none of its voter sets now) takes no more
// proposals, as raft.Node's run loop decides.
// Once raft panicked (guarded), it applies nothing and returns nil.
func (s *inlineNode) ApplyConfChange(cc raftpb.ConfChangeI) *raftpb.ConfState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.panicked.Load() {
		return nil
	}
	var cs *raftpb.ConfState
	if s.guarded(func() {
		before := s.tracked()
		cs = s.raw.ApplyConfChange(cc)
		if before && !s.tracked() &&
			!slices.Contains(cs.GetVoters(), s.id) && !slices.Contains(cs.GetVotersOutgoing(), s.id) {
			s.removed = true
		}
		s.afterLocked()
	}) {
		return nil
	}
	return cs
}

// tracked reports whether raft's configuration holds this member; mu held.
func (s *inlineNode) tracked() bool {
	found := false
	s.raw.WithProgress(func(id uint64, _ raft.ProgressType, _ tracker.Progress) {
		if id == s.id {
			found = true
		}
	})
	return found
}

func (s *inlineNode) TransferLeadership(_ context.Context, _, transferee uint64) {
	s.do(func(r *raft.RawNode) { r.TransferLeader(transferee) })
}

func (s *inlineNode) ForgetLeader(context.Context) error {
	var err error
	s.do(func(r *raft.RawNode) { err = r.ForgetLeader() })
	return err
}

func (s *inlineNode) ReadIndex(_ context.Context, rctx []byte) error {
	if s.stopped.Load() {
		return raft.ErrStopped
	}
	s.do(func(r *raft.RawNode) { r.ReadIndex(rctx) })
	return nil
}

func (s *inlineNode) Status() raft.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.Status()
}

func (s *inlineNode) ReportUnreachable(id uint64) {
	s.do(func(r *raft.RawNode) { r.ReportUnreachable(id) })
}

func (s *inlineNode) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	s.do(func(r *raft.RawNode) { r.ReportSnapshot(id, st) })
}

// Stop makes every later input fail or do nothing; it waits for an input
// in progress (it takes mu). A Ready in flight is dropped with the Ready
// loop that stops too.
func (s *inlineNode) Stop() {
	s.stop.Do(func() {
		s.mu.Lock()
		s.stopped.Store(true)
		s.mu.Unlock()
		close(s.done)
	})
}
