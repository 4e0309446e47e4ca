package raftnode

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// Node is one running member of a Raft group. Its methods are safe for
// concurrent use.
type Node struct {
	cfg  Config
	rep  storage.Replica // the member in its engine
	log  *slog.Logger
	rn   raft.Node
	mem  *raft.MemoryStorage
	disk *storage.RaftLog
	sm   StateMachine
	tr   transport.Transport

	leader     atomic.Uint64
	term       atomic.Uint64
	commit     atomic.Uint64
	applied    atomic.Uint64
	isLeader   atomic.Bool
	leaderTerm uint64 // term in which this node became leader; run goroutine only
	// token is the founding token of the member's copy of the group, from
	// its identity (0: none stored, or a member that joined before tokens
	// were kept); see transport.Founded.
	token uint64

	proposals proposals
	reads     reads
	waiters   appliedWaiterSet
	qz        quiescence

	applyc chan applyTask
	// smMu is held while the state machine runs: by the apply goroutine
	// for each task, and by the Ready loop when it applies a small batch
	// itself (queueApply). applyQueued counts the entry batches handed to
	// the apply goroutine and not yet applied: the Ready loop applies
	// inline only when it is 0, so entries still apply in log order.
	smMu        sync.Mutex
	applyQueued atomic.Int64

	changeMu sync.Mutex // one ChangeMembership at a time

	// When each peer was last heard from, in ticks of this member's clock
	// (see heardRecently).
	ticks     atomic.Uint64 // ticks since start; the run goroutine counts them
	heardMu   sync.Mutex
	heardTick map[uint64]uint64 // peer id -> ticks when a message from it last arrived
	// heardEver are the peers this member ever heard from, as recorded in
	// its engine (storage.Engine.RecordHeard): a founder starting on empty
	// data that a peer heard from ran before and lost its data
	// (MemberProgress, cmd/shardkv's notBootstrapped). heardNew are those
	// heard first since the last record, which the next Ready writes
	// (synced) before it sends or persists anything that may rest on
	// their messages (recordHeard): not Step, whose caller delivers every
	// group's messages from a peer process in turn.
	heardEver map[uint64]bool
	heardNew  []uint64

	// The membership: written under smMu (by whoever applies), read by anyone.
	memberMu  sync.RWMutex
	confState *raftpb.ConfState
	addrs     map[uint64]string // members added by a change: id -> address
	// founders are the voters the group was founded with, sorted (see
	// Membership.Founders); foundersKnown is false while they are only
	// storage.Identity.Founders' guess (a member that joined the group
	// and has not learned them from a leader's snapshot).
	founders      []uint64
	foundersKnown bool
	// removed are the ids of members the group removed, sorted (see
	// Membership.Removed): never added again.
	removed []uint64

	// The state machine's side: guarded by smMu.
	membersChanged bool   // a change was applied since the last saveMembers
	logApplied     uint64 // the last log index handed to raft and the state machine
	snapIndex      uint64
	bytesSinceSnap uint64 // bytes of entries applied since snapIndex

	stopOnce sync.Once
	stopc    chan struct{}
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error
}

// Status is a point-in-time view of a member.
type Status struct {
	// ID is the member's Raft id; Leader the id of the leader it knows of
	// (0: none) and Term its current term; Commit the highest log index it
	// knows is committed, and Applied the last one it applied.
	ID, Leader, Term, Commit, Applied uint64
	// IsLeader reports whether the member leads its group.
	IsLeader bool
	// ProposalsDropped counts proposals made on this member that certainly
	// failed (rpcerr.ErrProposalDropped) since it started.
	ProposalsDropped uint64
	// Quiesced: the member's group is idle and it neither ticks nor
	// heartbeats (see quiesce.go). Quiescences counts the times it
	// quiesced since it started.
	Quiesced    bool
	Quiescences uint64
}

// Start opens the member described by c: it loads the Raft state from the
// engine (creating the group on first start), joins the network and starts
// the Ready and apply goroutines. It fails when c.ID is 0 or Engine,
// Network or StateMachine is nil, with a *storage.CorruptionError for a
// damaged log or identity record, and with the network's Join error.
func Start(c Config) (*Node, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:    cfg,
		log:    cfg.Logger.With("group", cfg.Group, "replica", cfg.ID),
		mem:    raft.NewMemoryStorage(),
		rep:    storage.Replica{Group: cfg.Group, ID: cfg.ID},
		sm:     cfg.StateMachine,
		applyc: make(chan applyTask, 64),
		stopc:  make(chan struct{}),
		qz:     quiescence{wake: make(chan struct{}, 1)},

		heardTick: map[uint64]uint64{},
		heardEver: map[uint64]bool{},
	}
	n.disk = cfg.Engine.RaftLog(n.rep)
	n.proposals.init()
	n.reads.init()
	var idBase [8]byte
	_, _ = rand.Read(idBase[:])
	n.proposals.next.Store(binary.BigEndian.Uint64(idBase[:]))

	st, err := n.load()
	if err != nil {
		return nil, fmt.Errorf("start group %d replica %d: %w", cfg.Group, cfg.ID, err)
	}
	rcfg, err := n.raftConfig(st)
	if err != nil {
		return nil, fmt.Errorf("start group %d replica %d: %w", cfg.Group, cfg.ID, err)
	}
	if cfg.newRaft != nil {
		n.rn = cfg.newRaft(rcfg)
	} else if n.rn, err = startInline(rcfg, func(err error) {
		n.fatal(fmt.Errorf("group %d replica %d: %w", cfg.Group, cfg.ID, err))
	}); err != nil {
		return nil, fmt.Errorf("start group %d replica %d: %w", cfg.Group, cfg.ID, err)
	}
	tr, err := cfg.Network.Join(cfg.Group, cfg.ID, n)
	if err != nil {
		n.rn.Stop()
		return nil, fmt.Errorf("join network: %w", err)
	}
	n.tr = tr
	n.qz.init(tr)

	n.wg.Add(2)
	go n.run()
	go n.applyLoop()
	return n, nil
}

// load reads the member's raft state from disk into its MemoryStorage:
// bootstrapping a new group's member, or starting an added member empty
// (Config.Join), or forcing a new cluster (Config.ForceNewCluster).
func (n *Node) load() (storage.RaftState, error) {
	st, err := n.disk.Load()
	if err != nil {
		return st, err
	}
	if st.TornTail > 0 {
		n.log.Warn("repaired torn raft log tail", "dropped_entries", st.TornTail)
	}
	if n.cfg.ForceNewCluster && !st.Empty() {
		if st, err = forceNewCluster(st, n.disk, n.cfg.ID, n.sm.Applied()); err != nil {
			return st, err
		}
		n.log.Warn("forced a new cluster: this replica is its group's only voter; writes only the lost replicas had are lost",
			"commit", st.HardState.GetCommit())
	}
	if err := n.disk.CheckWhole(st); err != nil {
		return st, err
	}
	// A member that joined a running group says so in its identity: a
	// restart before raft wrote anything (its process stopped before the
	// leader reached it) must not bootstrap a group of its start-up peers,
	// which would make it a voter of a configuration that never was and
	// take its peers for the group's founders.
	ident, stored, err := n.cfg.Engine.LoadIdentity(n.rep)
	if err != nil {
		return st, err
	}
	heard, err := n.cfg.Engine.Heard(n.rep)
	if err != nil {
		return st, err
	}
	for _, id := range heard {
		n.heardEver[id] = true
	}
	if stored {
		n.token = ident.FoundingToken(n.cfg.Group)
	}
	joined := n.cfg.Join || stored && ident.Joined
	switch {
	case st.Snapshot == nil && joined:
		// A new member of an existing group: it starts knowing nothing and
		// learns the log (by snapshot) from the leader that added it. A
		// restart before that snapshot came may find a hard state (the
		// leader's term, heard in a heartbeat) and nothing else: it is
		// still a member that knows nothing.
		st.Snapshot = &raftpb.SnapshotMetadata{Index: new(uint64(0)), Term: new(uint64(0)), ConfState: &raftpb.ConfState{}}
	case st.Empty():
		st.Snapshot = bootstrapSnapshot(n.cfg.Peers)
		n.founders, n.foundersKnown = slices.Sorted(slices.Values(n.cfg.Peers)), true
		if err := n.disk.Append(nil, nil, st.Snapshot, true); err != nil {
			return st, fmt.Errorf("bootstrap: %w", err)
		}
	case st.Snapshot == nil:
		// A founder writes its bootstrap snapshot before anything else:
		// raft state without one is not what it wrote.
		return st, fmt.Errorf("%w: group %d replica %d founded the group but stores raft state and no snapshot (not even the bootstrap one)",
			storage.ErrCorrupted, n.cfg.Group, n.cfg.ID)
	}
	if !n.foundersKnown {
		n.loadFounders(ident, stored)
	}
	n.removed = slices.Clone(ident.Removed)
	if st.Snapshot.GetIndex() > 0 {
		if err := n.mem.ApplySnapshot(&raftpb.Snapshot{Metadata: st.Snapshot}); err != nil {
			return st, err
		}
	}
	n.snapIndex = st.Snapshot.GetIndex()
	if st.HardState != nil {
		if err := n.mem.SetHardState(st.HardState); err != nil {
			return st, err
		}
	}
	return st, n.mem.Append(st.Entries)
}

// raftConfig is the raft configuration the member restarts with, and sets
// the member's applied indexes and membership from st.
func (n *Node) raftConfig(st storage.RaftState) (*raft.Config, error) {
	// Raft must not hand back entries the state machine already reflects,
	// but it cannot be told of an applied index above what it knows to be
	// committed (the state machine can be ahead after a crash between a
	// snapshot restore and the log write). The state machine skips the rest.
	applied := n.sm.Applied()
	if snap := st.Snapshot.GetIndex(); applied < snap && snap > 1 {
		// Snapshots are taken at or below the applied index, and a
		// received one is restored before it is recorded: a state machine
		// behind its snapshot lost the entries between the two.
		return nil, &storage.CorruptionError{Replica: n.rep,
			Reason: fmt.Sprintf("the state machine has applied index %d, below its raft snapshot at %d", applied, snap)}
	}
	n.applied.Store(applied)
	// Status reports the term and commit index stored until a Ready says
	// otherwise: a follower quiesced since its start has none to say.
	n.term.Store(st.HardState.GetTerm())
	n.commit.Store(st.HardState.GetCommit())
	known := max(st.HardState.GetCommit(), st.Snapshot.GetIndex())
	// raft hands back only entries above the applied index it is given:
	// the configuration changes at or below it are replayed here.
	cs, added, removed, err := replayConfChanges(st.Snapshot.GetConfState(), st.Entries, min(applied, known))
	if err != nil {
		return nil, err
	}
	n.confState, n.addrs, n.removed = cs, n.loadAddrs(added), unionSorted(n.removed, removed)
	n.publishAddrs(n.addrs)
	rcfg := &raft.Config{
		ID:                        n.cfg.ID,
		ElectionTick:              n.cfg.ElectionTicks,
		HeartbeatTick:             n.cfg.HeartbeatTicks,
		Storage:                   bootStorage{n.mem, cs},
		Applied:                   min(applied, known),
		MaxSizePerMsg:             n.cfg.MaxSizePerMsg,
		MaxInflightMsgs:           n.cfg.MaxInflightMsgs,
		MaxInflightBytes:          n.cfg.MaxInflightBytes,
		MaxUncommittedEntriesSize: 64 << 20,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		// A follower forwards proposals to its leader (etcd does), so a
		// client that reaches any replica that reaches the leader is
		// served.
		DisableProposalForwarding: false,
		// A leader that removed itself steps down, so the others elect a
		// leader (raft's default keeps it leading, and dropping every
		// proposal, until it stops).
		StepDownOnRemoval: true,
		Logger:            raftLogger{n.log.With("component", "raft")},
	}
	if rcfg.Applied < st.Snapshot.GetIndex() {
		rcfg.Applied = 0 // raft starts from the snapshot index anyway
	}
	n.logApplied = max(st.Snapshot.GetIndex(), rcfg.Applied)
	return rcfg, nil
}

// bootstrapSnapshot is the state every member of a new group starts from:
// an empty state at index 1 whose membership is peers. Starting from a
// snapshot rather than from membership-change entries means the membership
// is on disk before the first Ready and never has to be replayed.
func bootstrapSnapshot(peers []uint64) *raftpb.SnapshotMetadata {
	voters := append([]uint64(nil), peers...)
	return &raftpb.SnapshotMetadata{
		Index:     new(uint64(1)),
		Term:      new(uint64(1)),
		ConfState: &raftpb.ConfState{Voters: voters},
	}
}

// Status reports the member's view of the group.
func (n *Node) Status() Status {
	return Status{
		ID:       n.cfg.ID,
		Leader:   n.leader.Load(),
		Term:     n.term.Load(),
		Commit:   n.commit.Load(),
		Applied:  n.applied.Load(),
		IsLeader: n.isLeader.Load(),

		ProposalsDropped: n.proposals.dropped.Load(),
		Quiesced:         n.quiesced(),
		Quiescences:      n.qz.count.Load(),
	}
}

// NotLeader returns the refusal of a request only the leader serves: a
// *rpcerr.NotLeaderError naming the leader this member knows of, with its
// address when the network can tell it (transport.Addresser).
func (n *Node) NotLeader() error {
	e := &rpcerr.NotLeaderError{Leader: n.leader.Load()}
	if a, ok := n.cfg.Network.(transport.Addresser); ok && e.Leader != 0 {
		e.Addr, _ = a.Addr(n.cfg.Group, e.Leader)
	}
	return e
}

// forwardedPropWait bounds how long a proposal forwarded by a follower may
// wait to enter raft.
const forwardedPropWait = 50 * time.Millisecond

// Step delivers a message from a peer (transport.Handler). It never blocks
// for long: the transport delivers a peer's messages in order on one
// stream, and a blocked Step would hold back all of them, heartbeats of a
// new leader included.
func (n *Node) Step(ctx context.Context, m *raftpb.Message) error {
	select {
	case <-n.stopc:
		return rpcerr.ErrStopped
	default:
	}
	n.heard(m.GetFrom())
	if m.GetType() == raftpb.MessageType_MsgProp {
		// raft takes proposals only while it knows a leader; a member
		// without one would leave a forwarded proposal waiting forever.
		// Drop it instead, as raft drops proposals: its proposer learns
		// the outcome is unknown when leadership changes, or gives up.
		// Known leaderless: at once, for a wait here holds back every
		// group's messages from the sender's process (forwarded
		// proposals keep coming while a removed or partitioned leader is
		// replaced); otherwise (raft may know less than the last Ready
		// said) at most forwardedPropWait.
		if n.leader.Load() == 0 {
			return raft.ErrProposalDropped
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, forwardedPropWait)
		defer cancel()
	}
	err := n.rn.Step(ctx, m)
	n.stepQuiesce(m, err == nil)
	return err
}

// heard records that a message from peer id arrived (Step).
func (n *Node) heard(id uint64) {
	now := n.ticks.Load()
	n.heardMu.Lock()
	n.heardTick[id] = now
	first := !n.heardEver[id] && id != n.cfg.ID
	if first {
		n.heardEver[id] = true
		n.heardNew = append(n.heardNew, id)
	}
	n.heardMu.Unlock()
}

// recordHeard writes, synced, the peers heard from for the first time
// since the last call (heardNew), each once for the stored replica. The
// run loop calls it at the top of every Ready: Step queued them before
// raft took their messages, so nothing those messages led to (a vote
// counted, an entry committed on an acknowledgement) is sent or
// persisted before the record is durable, and a power loss cannot leave
// a peer acted on but not recorded. It is written here, by the group's
// own goroutine, not in Step: a synced write there would hold back, for
// an fsync, every group's messages from the same peer process (a node
// forming a hundred groups hears from each peer a hundred times at once).
func (n *Node) recordHeard() error {
	n.heardMu.Lock()
	peers := n.heardNew
	n.heardNew = nil
	n.heardMu.Unlock()
	if len(peers) == 0 {
		return nil
	}
	return n.cfg.Engine.RecordHeard(n.rep, peers...)
}

// heardRecently reports whether this member heard from member id within
// the last election timeout (Config.ElectionTicks ticks), or whose process
// named it quiesced within that time (see quiesce.go); a member always
// hears from itself. It is what "reachable" means to the membership
// checks and the member list. Raft's own Progress.RecentActive cannot say
// it: raft clears it for every peer at each quorum check (every election
// timeout) and on winning an election, and sets it again only at the
// peer's next reply, so it reads false for live peers for a moment after
// each.
func (n *Node) heardRecently(id uint64) bool {
	if id == n.cfg.ID {
		return true
	}
	if n.announcedRecently(id) {
		return true
	}
	if n.quiesced() {
		return false // its ticks stand still: only the names count
	}
	n.heardMu.Lock()
	at, ok := n.heardTick[id]
	n.heardMu.Unlock()
	return ok && n.ticks.Load()-at <= uint64(n.cfg.ElectionTicks)
}

// MemberProgress implements transport.MemberReporter.
func (n *Node) MemberProgress(id uint64) transport.MemberInfo {
	st := n.rn.Status()
	n.heardMu.Lock()
	heard := n.heardEver[id]
	n.heardMu.Unlock()
	info := transport.MemberInfo{Leader: st.RaftState == raft.StateLeader, Term: n.term.Load(), Removed: n.Members().WasRemoved(id), FoundingToken: n.token,
		Heard: heard}
	if !info.Leader {
		return info
	}
	if pr, ok := st.Progress[id]; ok {
		info.Match, info.Learner = pr.Match, pr.IsLearner
	}
	return info
}

// ReportUnreachable tells Raft a message to peer id was lost
// (transport.Handler).
// A quiesced member wakes: its quiescing heartbeat may be what was lost.
func (n *Node) ReportUnreachable(id uint64) {
	n.unquiesce()
	n.rn.ReportUnreachable(id)
}

// Done is closed when the node stops, by Stop or by a fatal error (see Err).
func (n *Node) Done() <-chan struct{} { return n.stopc }

// FoundingToken implements transport.Founded: the founding token of the
// member's copy of its group (storage.Identity.FoundingToken), 0 if not
// known.
func (n *Node) FoundingToken() uint64 { return n.token }

// Err returns the fatal error that stopped the node, if any.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// Stop stops the member and waits for its goroutines. Pending proposals and
// reads fail with rpcerr.ErrStoppedInFlight and rpcerr.ErrStopped. The
// engine and state machine stay open: they belong to the caller.
func (n *Node) Stop() {
	n.stopOnce.Do(func() { close(n.stopc) })
	n.wg.Wait()
	n.stopReads()
	n.rn.Stop()
	_ = n.tr.Close()
}

// fatal records err and stops the node's goroutines: a replica whose disk
// or state machine failed must not go on participating.
func (n *Node) fatal(err error) {
	n.errMu.Lock()
	if n.err == nil {
		n.err = err
		n.log.Error("raft node stopped by a fatal error", "err", err)
	}
	n.errMu.Unlock()
	n.stopOnce.Do(func() { close(n.stopc) })
}

// run is the Ready loop: the only goroutine that drives the raft.Node.
func (n *Node) run() {
	defer n.wg.Done()
	ticks := n.cfg.Ticks
	if ticks == nil {
		ticker := time.NewTicker(n.cfg.TickInterval)
		defer ticker.Stop()
		ticks = ticker.C
	}
	// A quiesced follower looks for its leader's name twice an election
	// timeout: it wakes between one and one and a half timeouts after the
	// leader's process last named it.
	look := n.electionTimeout() / 2
	var watch *time.Ticker // a quiesced follower's look at its leader's presence
	defer func() {
		if watch != nil {
			watch.Stop()
		}
	}()
	for {
		tickc, watchc := ticks, (<-chan time.Time)(nil)
		if q := n.qz.quiesced.Load(); q != n.qz.was {
			n.qz.was = q
			n.qz.candidate = [3]uint64{} // awake, the leader looks twice again
			if q && !n.isLeader.Load() {
				watch = time.NewTicker(look)
			} else if !q && watch != nil {
				watch.Stop()
				watch = nil
			}
		}
		if n.qz.was {
			tickc = nil
			if watch != nil {
				watchc = watch.C
			}
		}
		select {
		case <-tickc:
			if n.ticks.Add(1)%uint64(n.cfg.HeartbeatTicks) == 0 && n.maybeQuiesce() {
				continue // quiesced: this tick would heartbeat
			}
			n.rn.Tick()
		case <-watchc:
			if n.leaderGone() {
				n.unquiesce()
				// Raft's election clock stood still since the quiescing
				// heartbeat: let an election timeout pass on it, so this
				// member grants pre-votes at once (it is out of the
				// leader's lease) and campaigns within its random part.
				for range n.cfg.ElectionTicks {
					n.rn.Tick()
				}
			}
		case <-n.qz.wake:
			// Quiescence changed: the loop's top takes it into account.
		case rd := <-n.rn.Ready():
			if err := n.handleReady(rd); err != nil {
				if !errors.Is(err, rpcerr.ErrStopped) {
					n.fatal(err)
				}
				return
			}
		case <-n.stopc:
			return
		}
	}
}

func (n *Node) handleReady(rd raft.Ready) error {
	if err := n.recordHeard(); err != nil {
		return err
	}
	n.readyQuiesce(&rd)
	readsAsk := false // the round in flight must ask again (askReadAgain)
	if hs := rd.HardState; !raft.IsEmptyHardState(hs) {
		if n.term.Swap(hs.GetTerm()) != hs.GetTerm() {
			readsAsk = true
		}
		n.commit.Store(hs.GetCommit())
	}
	if rd.SoftState != nil {
		if old := n.leader.Swap(rd.SoftState.Lead); old != rd.SoftState.Lead {
			// Proposals forwarded to the old leader may be lost or may
			// commit under the new one: their callers must not wait for an
			// answer that may never come. Reads ask again at once.
			if !n.isLeader.Load() {
				n.proposals.failAll(rpcerr.ErrLeaderChanged)
			}
			readsAsk = true
		}
		n.setLeader(rd.SoftState.RaftState == raft.StateLeader)
	}
	if n.isLeader.Load() && n.term.Load() != n.leaderTerm {
		// Leader again, in a later term, between two Readys.
		n.setLeader(false)
		n.setLeader(true)
	}
	leader := n.isLeader.Load()
	if leader {
		n.send(rd.Messages)
	}

	var snap *raftpb.SnapshotMetadata
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.restore(rd.Snapshot); err != nil {
			return err
		}
		snap = rd.Snapshot.GetMetadata()
	}
	var hs *raftpb.HardState
	if !raft.IsEmptyHardState(rd.HardState) {
		hs = rd.HardState
	}
	// A snapshot is synced whatever raft says (a Ready holding only a
	// snapshot need not be, by its rules): the member acknowledges it, and
	// one that lost it in a crash would come back knowing nothing while its
	// leader counts it as holding the snapshot's index.
	if err := n.disk.Append(hs, rd.Entries, snap, rd.MustSync || snap != nil); err != nil {
		return err
	}
	if snap != nil {
		if err := n.mem.ApplySnapshot(&raftpb.Snapshot{Metadata: snap}); err != nil {
			return fmt.Errorf("apply snapshot metadata at %d: %w", snap.GetIndex(), err)
		}
	}
	if hs != nil {
		if err := n.mem.SetHardState(hs); err != nil {
			return err
		}
	}
	if err := n.mem.Append(rd.Entries); err != nil {
		return err
	}
	if leader {
		n.proposals.track(rd.Entries)
	} else {
		n.send(rd.Messages)
	}
	// Answers first: one that came in the Ready that changed the leader
	// is still good (raft confirmed it in its term).
	for _, rs := range rd.ReadStates {
		n.readState(rs.RequestCtx, rs.Index)
	}
	if readsAsk {
		n.askReadAgain()
	}
	if err := n.queueApply(rd.CommittedEntries); err != nil {
		return err
	}
	n.rn.Advance()
	return nil
}

// queueApply hands committed entries to the apply goroutine, or applies
// them itself when they are few (inlineApplyEntries, inlineApplyBytes) and
// no batch handed over earlier is left to apply: handing a small batch over
// costs the process a goroutine wake-up, and usually a thread's, per raft
// round on every member, more than applying it. Large batches still apply
// beside the next Ready. raft counts the entries applied at the next
// Advance, and must by then know the configuration they make (etcd waits
// so too): a batch with a configuration change is applied before
// queueApply returns. raft leaves a joint configuration by itself at that
// point.
func (n *Node) queueApply(ents []*raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	if n.applyQueued.Load() == 0 && len(ents) <= inlineApplyEntries && entriesBytes(ents) <= inlineApplyBytes {
		// Only this goroutine queues entries, and the apply goroutine
		// counts a batch off only once it applied it: with none counted,
		// every committed entry before these is applied. smMu waits out
		// the apply goroutine's last moments on its batch, or a
		// Node.Compact task.
		n.smMu.Lock()
		defer n.smMu.Unlock()
		select {
		case <-n.stopc:
			// Stopped, perhaps by a failed apply: nothing may apply after it.
			return rpcerr.ErrStopped
		default:
		}
		return n.applyEntries(ents)
	}
	var done chan error
	if hasConfChange(ents) {
		done = make(chan error, 1)
	}
	n.applyQueued.Add(1)
	select {
	case n.applyc <- applyTask{entries: ents, done: done}:
	case <-n.stopc:
		return rpcerr.ErrStopped
	}
	if done == nil {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-n.stopc:
		return rpcerr.ErrStopped
	}
}

// inlineApplyBytes and inlineApplyEntries bound what the Ready loop applies
// itself (queueApply): a few client batches, not a busy leader's rounds,
// whose apply would delay the next Ready's appends and heartbeats.
const (
	inlineApplyBytes   = 16 << 10
	inlineApplyEntries = 64
)

// entriesBytes is the data size of ents.
func entriesBytes(ents []*raftpb.Entry) int {
	size := 0
	for _, e := range ents {
		size += len(e.GetData())
	}
	return size
}

// setLeader records a leadership change. Losing leadership fails every
// pending proposal: this node will not learn their fate soon, and callers
// must not wait for an election timeout of silence.
func (n *Node) setLeader(leader bool) {
	was := n.isLeader.Swap(leader)
	if leader && !was {
		n.leaderTerm = n.term.Load()
		n.log.Debug("became leader", "term", n.leaderTerm)
	}
	if was && !leader {
		n.proposals.failAll(rpcerr.ErrLeaderChanged)
	}
}

func (n *Node) send(msgs []*raftpb.Message) {
	if len(msgs) == 0 {
		return
	}
	out := make([]*raftpb.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.GetType() == raftpb.MessageType_MsgSnap {
			n.wg.Add(1)
			go n.sendSnapshot(m)
			continue
		}
		out = append(out, m)
	}
	n.tr.Send(out)
}
