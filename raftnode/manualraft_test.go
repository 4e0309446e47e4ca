package raftnode_test

import (
	"context"
	"sync"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// manualRaft is a raft.Node that runs etcd raft's RawNode synchronously:
// every input (tick, message, proposal, read request) is processed inside
// the call that makes it, and a Ready reaches the member's Ready loop only
// when the test hands it over (handOut). With it the test, not the
// scheduler, decides the order of everything raft does, while raftnode's
// own Ready and apply goroutines and its read rounds run unchanged.
//
// It mirrors raft.Node's observable behaviour where raftnode depends on it:
// a proposal waits until a leader is known (raft.Node only reads its
// proposal channel then); messages that raft.Node drops or whose step
// errors it ignores are dropped and ignored here too; a forwarded proposal
// is stepped as the local node's own.
type manualRaft struct {
	id uint64

	mu       sync.Mutex
	raw      *raft.RawNode
	inFlight bool       // a Ready was handed out and not yet advanced
	last     raft.Ready // the Ready in flight
	ticks    int        // ticks processed
	reads    int        // read-index requests received
	changes  int        // configuration changes proposed
	changed  chan struct{}

	readyc   chan raft.Ready
	stopped  chan struct{}
	stopOnce sync.Once
}

var _ raft.Node = (*manualRaft)(nil)

func newManualRaft(c *raft.Config) *manualRaft {
	raw, err := raft.NewRawNode(c)
	if err != nil {
		panic(err)
	}
	return &manualRaft{id: c.ID, raw: raw, changed: make(chan struct{}),
		readyc: make(chan raft.Ready), stopped: make(chan struct{})}
}

// notify wakes whoever waits for a change; called with mu held.
func (m *manualRaft) notify() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// do runs fn on the RawNode and wakes waiters.
func (m *manualRaft) do(fn func(*raft.RawNode)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fn(m.raw)
	m.notify()
}

// wait returns a channel closed at the next change, and whether cond holds
// now.
func (m *manualRaft) wait(cond func() bool) (<-chan struct{}, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed, cond()
}

func (m *manualRaft) Tick() { m.do(func(r *raft.RawNode) { r.Tick(); m.ticks++ }) }

func (m *manualRaft) Campaign(context.Context) error {
	var err error
	m.do(func(r *raft.RawNode) { err = r.Campaign() })
	return err
}

func (m *manualRaft) Propose(ctx context.Context, data []byte) error {
	return m.propose(ctx, &raftpb.Message{Type: raftpb.MessageType_MsgProp.Enum(),
		Entries: []*raftpb.Entry{{Data: data}}}, true)
}

// propose steps a proposal once a leader is known, as raft.Node does;
// with wait it returns raft's verdict, else nil.
func (m *manualRaft) propose(ctx context.Context, msg *raftpb.Message, wait bool) error {
	for {
		m.mu.Lock()
		if m.raw.BasicStatus().Lead != raft.None {
			msg.From = &m.id
			err := m.raw.Step(msg)
			m.notify()
			m.mu.Unlock()
			if !wait {
				return nil
			}
			return err
		}
		ch := m.changed
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-m.stopped:
			return raft.ErrStopped
		}
	}
}

func (m *manualRaft) ProposeConfChange(_ context.Context, cc raftpb.ConfChangeI) error {
	var err error
	m.do(func(r *raft.RawNode) { err = r.ProposeConfChange(cc); m.changes++ })
	return err
}

func (m *manualRaft) Step(ctx context.Context, msg *raftpb.Message) error {
	if raft.IsLocalMsg(msg.GetType()) && !raft.IsLocalMsgTarget(msg.GetFrom()) {
		return nil
	}
	if msg.GetType() == raftpb.MessageType_MsgProp {
		return m.propose(ctx, msg, false)
	}
	m.do(func(r *raft.RawNode) { _ = r.Step(msg) })
	return nil
}

func (m *manualRaft) Ready() <-chan raft.Ready { return m.readyc }

func (m *manualRaft) Advance() {
	m.do(func(r *raft.RawNode) {
		r.Advance(m.last)
		m.last, m.inFlight = raft.Ready{}, false
	})
}

func (m *manualRaft) ApplyConfChange(cc raftpb.ConfChangeI) *raftpb.ConfState {
	var cs *raftpb.ConfState
	m.do(func(r *raft.RawNode) { cs = r.ApplyConfChange(cc) })
	return cs
}

func (m *manualRaft) TransferLeadership(_ context.Context, _, transferee uint64) {
	m.do(func(r *raft.RawNode) { r.TransferLeader(transferee) })
}

func (m *manualRaft) ForgetLeader(context.Context) error {
	var err error
	m.do(func(r *raft.RawNode) { err = r.ForgetLeader() })
	return err
}

func (m *manualRaft) ReadIndex(_ context.Context, rctx []byte) error {
	m.do(func(r *raft.RawNode) { r.ReadIndex(rctx); m.reads++ })
	return nil
}

func (m *manualRaft) Status() raft.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.raw.Status()
}

func (m *manualRaft) ReportUnreachable(id uint64) {
	m.do(func(r *raft.RawNode) { r.ReportUnreachable(id) })
}

func (m *manualRaft) ReportSnapshot(id uint64, st raft.SnapshotStatus) {
	m.do(func(r *raft.RawNode) { r.ReportSnapshot(id, st) })
}

func (m *manualRaft) Stop() { m.stopOnce.Do(func() { close(m.stopped) }) }

// takeReady returns the next Ready, accepted, if there is one and none is
// in flight; the caller must hand it out.
func (m *manualRaft) takeReady() (raft.Ready, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inFlight || !m.raw.HasReady() {
		return raft.Ready{}, false
	}
	m.last, m.inFlight = m.raw.Ready(), true
	return m.last, true
}

func (m *manualRaft) basic() raft.BasicStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.raw.BasicStatus()
}
