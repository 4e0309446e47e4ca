package raftnode

import (
	"bytes"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/shardkv/shardkv/transport"
)

// Quiescence: an idle group stops ticking and heartbeating (CockroachDB's
// quiesced ranges). A node hosting a hundred idle replicas otherwise
// wakes ten thousand times a second for ticks and exchanges thousands of
// heartbeats, for nothing.
//
// The leader quiesces when, at two heartbeat checks in a row, nothing has
// moved: every entry is committed and applied, every member (learners
// included) has every entry and was heard within an election timeout, no
// proposal waits, no leadership transfer runs. It then sends each member
// a heartbeat marked quiesce (quiesceContext) and stops ticking; a member
// that steps it stops ticking too. Any other message, proposal, read,
// membership change or unreachable report wakes a member (unquiesce), and
// a woken leader heartbeats, which wakes its followers.
//
// Quiescence touches liveness only, never safety: raft decides nothing
// from ticks but when to campaign and when to heartbeat. That holds
// because reads are ReadOnlySafe (raftConfig always sets it): a quiesced
// leader's election clock stands still, so it holds no lease a
// lease-based read could trust. What replaces the
// heartbeats is the transport's presence list (transport.Quiescence):
// every QuiescedInterval a process names its quiesced replicas to each
// peer process. A quiesced follower that has not seen its leader named for
// an election timeout wakes, ticks and campaigns, so a dead, stopped or
// partitioned leader is replaced about one election timeout later than a
// busy group's would be. A quiesced member counts as heard from
// (heardRecently) while its process names it.
//
// Only transports that carry the presence list quiesce (the gRPC
// transport); on others (memnet, the deterministic tests) members tick
// for ever, as before.

// quiesceContext marks a quiescing heartbeat. Raft answers a heartbeat
// with its context and reads the response's first 8 bytes as a ReadIndex
// round (little-endian, see raft's readOnly.recvAck): they are zero, which
// acknowledges no read round, so the marker can never confirm a read.
var quiesceContext = []byte("\x00\x00\x00\x00\x00\x00\x00\x00quiesce")

// isQuiesceMessage reports whether m is a quiescing heartbeat or the
// response to one.
func isQuiesceMessage(m *raftpb.Message) bool {
	return isHeartbeat(m) && bytes.Equal(m.GetContext(), quiesceContext)
}

// quiescence is a member's quiescence state.
type quiescence struct {
	// tr is set once, before on: the transport may call Step before the
	// member is started, so readers look at on first.
	tr       transport.Quiescence
	on       atomic.Bool // tr is set: this member may quiesce
	quiesced atomic.Bool
	leader   atomic.Uint64 // a quiesced follower's leader, whose presence it watches
	wake     chan struct{} // tells the run goroutine quiesced changed
	// activity counts proposals, reads and membership changes made on
	// this member: the leader quiesces only if none came between its two
	// checks (a read round in flight needs the heartbeats).
	activity atomic.Uint64
	count    atomic.Uint64 // times this member quiesced (Status.Quiescences)

	// mu orders the transitions, so that whoever sees the member awake
	// also sees its clock caught up (heardRecently).
	mu    sync.Mutex
	since time.Time // when this quiescence began (mu)

	// Run goroutine only.
	candidate [3]uint64 // term, last index and activity at the previous leader check
	was       bool      // quiesced as the run goroutine last saw it
}

func (q *quiescence) init(tr transport.Transport) {
	var ok bool
	if q.tr, ok = tr.(transport.Quiescence); ok {
		q.on.Store(true)
	}
}

func (q *quiescence) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// unquiesce wakes the member if it is quiesced. Safe from any goroutine.
// The ticks not taken while quiesced are counted before the member shows
// awake, so a peer silent all along is not heard recently: a membership
// check right after waking must see who really answered.
func (n *Node) unquiesce() {
	if !n.qz.quiesced.Load() {
		return
	}
	n.qz.mu.Lock()
	defer n.qz.mu.Unlock()
	if !n.qz.quiesced.Load() {
		return
	}
	n.ticks.Add(uint64(time.Since(n.qz.since) / n.cfg.TickInterval))
	n.qz.quiesced.Store(false)
	n.qz.tr.SetQuiesced(false)
	n.qz.poke()
}

// quiesce marks the member quiesced (leader: its check found the group
// idle; follower: it stepped a quiescing heartbeat from leader).
func (n *Node) quiesce(leader uint64) {
	n.qz.mu.Lock()
	defer n.qz.mu.Unlock()
	if n.qz.quiesced.Load() {
		return
	}
	n.qz.leader.Store(leader)
	n.qz.since = time.Now()
	n.qz.count.Add(1)
	n.qz.quiesced.Store(true)
	n.qz.tr.SetQuiesced(true)
	n.qz.poke()
}

// active records a proposal, read or membership change on this member and
// wakes it.
func (n *Node) active() {
	n.qz.activity.Add(1)
	n.unquiesce()
}

// quiesced reports whether the member is quiesced (see Status).
func (n *Node) quiesced() bool { return n.qz.quiesced.Load() }

// stepQuiesce is Step's part: every message but heartbeat responses
// (ours, and plain ones a follower sent before it quiesced) and the
// quiescing heartbeat wakes the member; the quiescing heartbeat, once raft
// took it, quiesces a follower. A response that needs an append from the
// leader wakes it through its Ready (readyQuiesce).
func (n *Node) stepQuiesce(m *raftpb.Message, stepped bool) {
	if !n.qz.on.Load() {
		return
	}
	if !isQuiesceMessage(m) && !(isPlainHeartbeat(m) && m.GetType() == raftpb.MessageType_MsgHeartbeatResp) {
		n.unquiesce()
		return
	}
	if !stepped || m.GetType() != raftpb.MessageType_MsgHeartbeat || n.isLeader.Load() || m.GetTerm() < n.term.Load() {
		return
	}
	n.quiesce(m.GetFrom())
}

// readyQuiesce wakes a member whose Ready shows activity: new entries, read
// states, a snapshot, or messages other than heartbeats that confirm no
// read. It closes the race between a leader's decision to quiesce and a
// proposal or read that arrived just after its check. A quiesced leader's
// plain heartbeats, made by ticks before it quiesced, are dropped: sent
// after the quiescing ones they would wake its followers.
func (n *Node) readyQuiesce(rd *raft.Ready) {
	if !n.qz.quiesced.Load() {
		return
	}
	active := len(rd.Entries) > 0 || len(rd.ReadStates) > 0 || !raft.IsEmptySnap(rd.Snapshot) ||
		slices.ContainsFunc(rd.Messages, func(m *raftpb.Message) bool { return !isPlainHeartbeat(m) && !isQuiesceMessage(m) })
	if active {
		n.unquiesce()
		return
	}
	if n.isLeader.Load() {
		rd.Messages = slices.DeleteFunc(rd.Messages, func(m *raftpb.Message) bool {
			return isPlainHeartbeat(m) && m.GetType() == raftpb.MessageType_MsgHeartbeat
		})
	}
}

// isHeartbeat reports whether m is a heartbeat or a heartbeat response.
func isHeartbeat(m *raftpb.Message) bool {
	t := m.GetType()
	return t == raftpb.MessageType_MsgHeartbeat || t == raftpb.MessageType_MsgHeartbeatResp
}

// isPlainHeartbeat reports whether m is a heartbeat or a heartbeat
// response that confirms no read (no context).
func isPlainHeartbeat(m *raftpb.Message) bool { return isHeartbeat(m) && len(m.GetContext()) == 0 }

// maybeQuiesce is the leader's check, made every heartbeat period by the
// run goroutine: it quiesces the group when nothing moved since the
// previous check (see the comment at the top of this file), and reports
// whether it did.
func (n *Node) maybeQuiesce() bool {
	if !n.qz.on.Load() || !n.isLeader.Load() || n.proposals.pending() {
		n.qz.candidate = [3]uint64{}
		return false // busy leaders do not pay for Status
	}
	st := n.rn.Status()
	self, ok := st.Progress[n.cfg.ID]
	if !ok || st.RaftState != raft.StateLeader || st.LeadTransferee != 0 {
		n.qz.candidate = [3]uint64{}
		return false
	}
	last := self.Match
	idle := st.HardState.GetCommit() == last && st.Applied >= last && n.applied.Load() >= last &&
		len(st.Config.Voters[1]) == 0
	for id, pr := range st.Progress {
		if id != n.cfg.ID && (pr.Match != last || pr.State != tracker.StateReplicate || !n.heardRecently(id)) {
			idle = false
		}
	}
	if !idle {
		n.qz.candidate = [3]uint64{}
		return false
	}
	if now := [3]uint64{st.HardState.GetTerm(), last, n.qz.activity.Load()}; n.qz.candidate != now {
		n.qz.candidate = now // idle only since this check: look again at the next
		return false
	}
	msgs := make([]*raftpb.Message, 0, len(st.Progress)-1)
	for id := range st.Progress {
		if id == n.cfg.ID {
			continue
		}
		msgs = append(msgs, &raftpb.Message{
			Type: raftpb.MessageType_MsgHeartbeat.Enum(), To: new(id), From: new(n.cfg.ID),
			Term: new(st.HardState.GetTerm()), Commit: new(st.HardState.GetCommit()), Context: quiesceContext,
		})
	}
	n.quiesce(n.cfg.ID)
	n.tr.Send(msgs)
	return true
}

// leaderGone reports whether a quiesced follower has not seen its leader
// named quiesced for an election timeout since it quiesced: the leader's
// process is dead or cut off, or the leader woke and its wake-up message
// was lost. The follower then wakes and, if nothing else comes, campaigns.
func (n *Node) leaderGone() bool {
	at := n.qz.tr.QuiescedAt(n.qz.leader.Load())
	n.qz.mu.Lock()
	at = later(at, n.qz.since)
	n.qz.mu.Unlock()
	return time.Since(at) > n.electionTimeout()
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// electionTimeout is the election timeout's wall-clock length.
func (n *Node) electionTimeout() time.Duration {
	return time.Duration(n.cfg.ElectionTicks) * n.cfg.TickInterval
}

// announcedRecently reports whether member id's process named it quiesced
// within the last election timeout.
func (n *Node) announcedRecently(id uint64) bool {
	return n.qz.on.Load() && time.Since(n.qz.tr.QuiescedAt(id)) <= n.electionTimeout()
}
