package raftnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/confchange"
	"go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// Membership is a group's members as this member has applied them.
type Membership struct {
	Voters   []uint64 // sorted
	Learners []uint64 // sorted
	// Joint is true while a change of two voters (Replace) is in
	// progress: decisions need a majority of both the old and the new
	// voters (Raft thesis §4.3, joint consensus).
	Joint bool
	// Addrs are the members' addresses this member knows: those added by a
	// change, and the founding members' (from the network).
	Addrs map[uint64]string
	// Founders are the voters the group was founded with (the
	// configuration of its bootstrap snapshot), sorted: known to a member
	// that founded the group, and learned by one added later from the
	// first snapshot its leader sends. A member that does not know them
	// (it joined, on data written before they were recorded) has
	// storage.Identity.Founders' guess.
	Founders []uint64
	// Removed are the ids of the members the group removed, as far as
	// this member applied or learned from its leader's snapshot, sorted.
	// An id is never a member twice (AddLearner refuses it): a new replica
	// under a removed id would not know the old one's votes, and could
	// vote twice in a term.
	Removed []uint64
}

// IsVoter reports whether id votes.
func (m Membership) IsVoter(id uint64) bool { return slices.Contains(m.Voters, id) }

// IsLearner reports whether id is a learner.
func (m Membership) IsLearner(id uint64) bool { return slices.Contains(m.Learners, id) }

// isMember reports whether id is a voter or a learner.
func (m Membership) isMember(id uint64) bool { return m.IsVoter(id) || m.IsLearner(id) }

// WasRemoved reports whether member id was removed from the group and is
// in no configuration of it now: a voter of a joint configuration's
// outgoing half still counts as a member (every change here leaves the
// joint configuration before the next), and --force-new-cluster makes a
// removed id the only voter again.
func (m Membership) WasRemoved(id uint64) bool {
	return slices.Contains(m.Removed, id) && !m.Joint && !m.IsVoter(id) && !m.IsLearner(id)
}

// ChangeKind is what a MemberChange does.
type ChangeKind int

// The membership changes. A replica is replaced by adding its successor as
// a learner, promoting it (or Replace, which swaps the two voters at once
// through joint consensus), and removing the old one.
const (
	// AddLearner adds ID at Addr as a learner: it receives the log (by
	// snapshot when far behind) but does not vote.
	AddLearner ChangeKind = iota + 1
	// Promote makes the learner ID a voter once it has caught up.
	Promote
	// Remove removes the member ID (voter or learner).
	Remove
	// Replace promotes the learner ID and removes the voter Old in one
	// joint-consensus change.
	Replace
)

// String returns "add-learner", "promote", "remove" or "replace", or
// "ChangeKind(N)" for an unknown kind N.
func (k ChangeKind) String() string {
	switch k {
	case AddLearner:
		return "add-learner"
	case Promote:
		return "promote"
	case Remove:
		return "remove"
	case Replace:
		return "replace"
	}
	return fmt.Sprintf("ChangeKind(%d)", int(k))
}

// MemberChange is one change of a group's membership.
type MemberChange struct {
	Kind ChangeKind
	ID   uint64
	Addr string // AddLearner: the new member's address, host:port
	Old  uint64 // Replace: the voter that leaves
}

// learnerReady is how far behind the leader a learner may be and still be
// promoted, as a fraction of the leader's log (etcd's
// readyPercentThreshold: 0.9).
const learnerReady = 0.9

// ChangeMembership proposes change on the leader and waits until it is
// applied here (for Replace, until the joint configuration is left). It
// refuses, changing nothing, as etcd's strict reconfiguration check does:
//
//	rpcerr.ErrMembershipChangeInProgress  another change is not applied yet, or the group is in joint consensus
//	rpcerr.ErrUnknownMember               the member to promote, remove or replace is not in the group
//	rpcerr.ErrMemberExists                the member to add is already in the group
//	rpcerr.ErrMemberRemoved               the member to add was removed from the group once
//	rpcerr.ErrNotLearner                  Promote or Replace names a member that is not a learner
//	rpcerr.ErrLearnerBehind               the learner has less than 90% of the leader's log
//	rpcerr.ErrWouldLoseQuorum             Promote, Replace or Remove: after the change, fewer voters than a quorum would be reachable (heard from within an election timeout)
//	rpcerr.ErrBadMemberAddr               AddLearner without a host:port address
//	rpcerr.ErrMemberAddrInUse             AddLearner at the address of a member
//	rpcerr.ErrBadMemberChange             an unknown Kind, or Replace whose Old is a learner (remove it instead)
//
// and with *rpcerr.NotLeaderError on a follower. It first waits, for at
// most a few ticks, until raft would take a change (until raft has applied
// the previous configuration change and an entry of the leader's term); a
// context error then means nothing was proposed. Errors from the wait for the outcome (context,
// rpcerr.ErrLeaderChanged) leave it unknown: read Members.
func (n *Node) ChangeMembership(ctx context.Context, change MemberChange) (Membership, error) {
	if !n.isLeader.Load() {
		return Membership{}, n.NotLeader()
	}
	// A quiesced leader ticks again: the change is checked against peers
	// heard from, and raft's configuration-change machinery needs its
	// heartbeats.
	n.active()
	// One change at a time from this member: raft silently drops a second
	// one proposed before the first applies (our check could not see it).
	n.changeMu.Lock()
	defer n.changeMu.Unlock()
	if err := n.awaitConfChangeAccepted(ctx); err != nil {
		return Membership{}, err
	}
	cc, err := n.checkChange(change)
	if err != nil {
		return Membership{}, err
	}
	id, ch := n.proposals.add()
	cc.Context, err = json.Marshal(changeContext{Proposal: id, Addr: change.Addr})
	if err != nil {
		n.proposals.forget(id)
		return Membership{}, err
	}
	if err := n.rn.ProposeConfChange(ctx, cc); err != nil {
		n.proposals.forget(id)
		return Membership{}, fmt.Errorf("propose %s of member %d: %w", change.Kind, change.ID, err)
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return Membership{}, r.err
		}
	case <-ctx.Done():
		n.proposals.forget(id)
		return Membership{}, ctx.Err()
	case <-n.stopc:
		return Membership{}, rpcerr.ErrStoppedInFlight
	}
	// A joint configuration is left by an entry the leader proposes by
	// itself once the joint one applies (raft's auto-leave; see
	// handleReady).
	for {
		m := n.Members()
		if !m.Joint {
			return m, nil
		}
		w := n.appliedWaiter(n.applied.Load() + 1)
		select {
		case <-w:
		case <-ctx.Done():
			return m, ctx.Err()
		case <-n.stopc:
			return m, rpcerr.ErrStoppedInFlight
		}
	}
}

// awaitConfChangeAccepted waits until raft would accept a configuration
// change from this leader. Raft silently turns one into an empty entry
// (whose proposer would wait for ever) while a change it accepted may be
// unapplied as far as it knows: one proposed before raft's applied index
// reached it, or any before the leader applied an entry of its own term.
// Raft's applied index moves when the Ready that carried an entry is
// advanced, which may be after this member's apply loop applied it (and
// after the previous ChangeMembership returned), so this waits for raft
// to have applied what this member applied, and an entry of the current
// term; both take at most a few ticks. It returns *NotLeaderError if
// leadership is lost meanwhile, or the context's error (nothing was
// proposed).
func (n *Node) awaitConfChangeAccepted(ctx context.Context) error {
	applied := n.applied.Load() // not later: under load it moves on
	for {
		st := n.rn.Status()
		if st.RaftState != raft.StateLeader {
			return n.NotLeader()
		}
		term, err := n.mem.Term(st.Applied)
		if err == nil && term == st.HardState.GetTerm() && st.Applied >= applied {
			return nil
		}
		select {
		case <-time.After(n.cfg.TickInterval):
		case <-ctx.Done():
			return ctx.Err()
		case <-n.stopc:
			return rpcerr.ErrStopped
		}
	}
}

// hasConfChange reports whether ents hold a configuration change.
func hasConfChange(ents []*raftpb.Entry) bool {
	for _, e := range ents {
		if t := e.GetType(); t == raftpb.EntryType_EntryConfChange || t == raftpb.EntryType_EntryConfChangeV2 {
			return true
		}
	}
	return false
}

// changeContext travels in a configuration change entry's Context.
type changeContext struct {
	Proposal uint64 `json:"proposal,omitempty"` // the proposer's id for it
	Addr     string `json:"addr,omitempty"`     // an added member's address
}

// checkChange validates change against the leader's view and returns the
// raft change that makes it.
func (n *Node) checkChange(change MemberChange) (*raftpb.ConfChangeV2, error) {
	st := n.rn.Status()
	if st.RaftState != raft.StateLeader {
		return nil, n.NotLeader()
	}
	m := n.Members()
	if m.Joint || n.confChangePending() {
		return nil, rpcerr.ErrMembershipChangeInProgress
	}
	single := func(t raftpb.ConfChangeType, id uint64) *raftpb.ConfChangeSingle {
		return &raftpb.ConfChangeSingle{Type: t.Enum(), NodeId: &id}
	}
	voters := slices.Clone(m.Voters)
	cc := &raftpb.ConfChangeV2{}
	switch change.Kind {
	case AddLearner:
		if err := checkAddLearner(m, change); err != nil {
			return nil, err
		}
		cc.Changes = []*raftpb.ConfChangeSingle{single(raftpb.ConfChangeType_ConfChangeAddLearnerNode, change.ID)}
	case Promote, Replace:
		if err := n.checkPromote(st, m, change); err != nil {
			return nil, err
		}
		cc.Changes = []*raftpb.ConfChangeSingle{single(raftpb.ConfChangeType_ConfChangeAddNode, change.ID)}
		voters = append(voters, change.ID)
		if change.Kind == Replace {
			cc.Changes = append(cc.Changes, single(raftpb.ConfChangeType_ConfChangeRemoveNode, change.Old))
			cc.Transition = raftpb.ConfChangeTransition_ConfChangeTransitionJointImplicit.Enum()
			voters = slices.DeleteFunc(voters, func(v uint64) bool { return v == change.Old })
		}
	case Remove:
		if !m.isMember(change.ID) {
			return nil, fmt.Errorf("%w: %d", rpcerr.ErrUnknownMember, change.ID)
		}
		cc.Changes = []*raftpb.ConfChangeSingle{single(raftpb.ConfChangeType_ConfChangeRemoveNode, change.ID)}
		voters = slices.DeleteFunc(voters, func(v uint64) bool { return v == change.ID })
	default:
		return nil, fmt.Errorf("%w: unknown change %d", rpcerr.ErrBadMemberChange, change.Kind)
	}
	// The voters left must include a reachable quorum, or the change
	// itself could never be followed by another (etcd refuses such
	// removals under --strict-reconfig-check). Adding a learner leaves the
	// voters as they are: it cannot lose a quorum, and is not refused as
	// if it could.
	if change.Kind == AddLearner {
		return cc, nil
	}
	if err := n.checkQuorum(voters, change.ID); err != nil {
		return nil, err
	}
	return cc, nil
}

// checkAddLearner validates adding change.ID at change.Addr as a learner
// to m.
func checkAddLearner(m Membership, change MemberChange) error {
	if m.isMember(change.ID) || change.ID == 0 {
		return fmt.Errorf("%w: %d", rpcerr.ErrMemberExists, change.ID)
	}
	if slices.Contains(m.Removed, change.ID) {
		// etcd never reuses a member id either (it draws them at random).
		return fmt.Errorf("%w: %d (a new replica under it would not know the old one's votes, and could vote twice in a term); take a new id",
			rpcerr.ErrMemberRemoved, change.ID)
	}
	if err := rpc.CheckAddr(change.Addr); err != nil {
		return fmt.Errorf("%w: %q: %v", rpcerr.ErrBadMemberAddr, change.Addr, err)
	}
	// One process (node) per member: two members at one address would
	// fail together, and a node refuses to host the second (etcd
	// refuses a peer URL already in use).
	for id, addr := range m.Addrs {
		if addr == change.Addr {
			return fmt.Errorf("%w: %s is member %d's (a node hosts one replica of a group)", rpcerr.ErrMemberAddrInUse, addr, id)
		}
	}
	return nil
}

// checkPromote validates a Promote or Replace against m: change.ID must
// be a learner within learnerReady of the leader's log (as st tracks
// it), and a Replace's Old a voter.
func (n *Node) checkPromote(st raft.Status, m Membership, change MemberChange) error {
	// OLD first: a mistyped OLD is the likelier mistake.
	switch {
	case change.Kind == Replace && !m.isMember(change.Old):
		return fmt.Errorf("%w: %d", rpcerr.ErrUnknownMember, change.Old)
	case change.Kind == Replace && !m.IsVoter(change.Old):
		return fmt.Errorf("%w: member %d is a learner, not a voter: remove it instead", rpcerr.ErrBadMemberChange, change.Old)
	}
	if !m.isMember(change.ID) {
		return fmt.Errorf("%w: %d", rpcerr.ErrUnknownMember, change.ID)
	}
	if !m.IsLearner(change.ID) {
		return fmt.Errorf("%w: %d", rpcerr.ErrNotLearner, change.ID)
	}
	lead, pr := st.Progress[n.cfg.ID].Match, st.Progress[change.ID].Match
	if float64(pr) < float64(lead)*learnerReady {
		return fmt.Errorf("%w: member %d has index %d of the leader's %d", rpcerr.ErrLearnerBehind, change.ID, pr, lead)
	}
	return nil
}

// checkQuorum refuses a change (of member id) that leaves voters unless a
// quorum of them was heard from recently, and one that leaves none.
func (n *Node) checkQuorum(voters []uint64, id uint64) error {
	active := 0
	for _, v := range voters {
		if n.heardRecently(v) {
			active++
		}
	}
	switch {
	case len(voters) == 0:
		return fmt.Errorf("%w: member %d is the group's only voter; a group keeps at least one", rpcerr.ErrWouldLoseQuorum, id)
	case active < len(voters)/2+1:
		return fmt.Errorf("%w: %d of the %d voters left would be reachable", rpcerr.ErrWouldLoseQuorum, active, len(voters))
	}
	return nil
}

// confChangePending reports whether a configuration change is in the log
// and not yet applied.
func (n *Node) confChangePending() bool {
	applied := n.applied.Load()
	first, err := n.mem.FirstIndex()
	if err != nil {
		return true // cannot tell: refuse
	}
	last, err := n.mem.LastIndex()
	if err != nil || last < max(applied+1, first) {
		return err != nil
	}
	// Entries below the first index are in the snapshot: applied.
	ents, err := n.mem.Entries(max(applied+1, first), last+1, 64<<20)
	return err != nil || hasConfChange(ents) // cannot tell: refuse
}

// Members returns the membership as this member has applied it.
func (n *Node) Members() Membership {
	n.memberMu.RLock()
	cs, book, founders, removed := n.confState, n.addrs, n.founders, n.removed
	n.memberMu.RUnlock()
	m := Membership{
		Voters:   slices.Sorted(slices.Values(cs.GetVoters())),
		Learners: slices.Sorted(slices.Values(cs.GetLearners())),
		Joint:    len(cs.GetVotersOutgoing()) > 0,
		Addrs:    map[uint64]string{},
		Founders: slices.Clone(founders),
		Removed:  slices.Clone(removed),
	}
	a, _ := n.cfg.Network.(transport.Addresser)
	for _, id := range slices.Concat(m.Voters, m.Learners, cs.GetVotersOutgoing()) {
		if addr, ok := book[id]; ok {
			m.Addrs[id] = addr
		} else if a != nil {
			if addr, ok := a.Addr(n.cfg.Group, id); ok {
				m.Addrs[id] = addr
			}
		}
	}
	return m
}

// applyConfChange applies a committed configuration change entry (under
// smMu, by the apply goroutine or the Ready loop): to raft, to the address
// book and to the network.
func (n *Node) applyConfChange(e *raftpb.Entry) (proposal uint64, err error) {
	cc, err := decodeConfChange(e)
	if err != nil {
		return 0, err
	}
	var ctx changeContext
	if len(cc.GetContext()) > 0 {
		_ = json.Unmarshal(cc.GetContext(), &ctx) // a foreign context names no proposal
	}
	cs := n.rn.ApplyConfChange(cc)
	if cs == nil { // raft panicked (inlineNode.guarded): record nothing
		return 0, fmt.Errorf("apply a configuration change at %d: %w", e.GetIndex(), ErrRaftPanicked)
	}
	n.memberMu.Lock()
	n.confState = cs
	book := maps.Clone(n.addrs)
	for _, c := range cc.GetChanges() {
		switch c.GetType() {
		case raftpb.ConfChangeType_ConfChangeAddLearnerNode, raftpb.ConfChangeType_ConfChangeAddNode:
			if ctx.Addr != "" {
				book[c.GetNodeId()] = ctx.Addr
			}
		case raftpb.ConfChangeType_ConfChangeRemoveNode:
			delete(book, c.GetNodeId())
			n.removed = unionSorted(n.removed, []uint64{c.GetNodeId()})
		}
	}
	n.addrs = book
	n.memberMu.Unlock()
	n.publishAddrs(book)
	n.membersChanged = true
	n.log.Info("membership changed", "index", e.GetIndex(), "change", confchange.Describe(cc.GetChanges()...),
		"voters", cs.GetVoters(), "learners", cs.GetLearners(), "outgoing", cs.GetVotersOutgoing())
	return ctx.Proposal, nil
}

// loadAddrs is the address book a member starts with: the membership it
// recorded (storage.Identity: its --peers, or the members after its last
// change) and the members the replayed changes added.
func (n *Node) loadAddrs(replayed map[uint64]string) map[uint64]string {
	book := map[uint64]string{}
	if id, ok, err := n.cfg.Engine.LoadIdentity(n.rep); err == nil && ok {
		maps.Copy(book, id.Current())
	}
	maps.Copy(book, replayed)
	return book
}

// loadFounders sets, from its stored identity id (load reads it), the
// founders of a member that did not bootstrap the group at this start:
// those the identity records
// (storage.Identity.KnownFounders). Without them (a member that joined,
// on data written before founders were recorded or before it learned
// them) it takes storage.Identity.Founders' guess, today's rule before
// founders were recorded: its first --peers less itself, which counts
// members added before it joined as founders. A member without a stored
// identity (tests) takes its Peers, as a guess too.
func (n *Node) loadFounders(id storage.Identity, stored bool) {
	if !stored {
		n.founders = slices.Sorted(slices.Values(n.cfg.Peers))
		return
	}
	if n.founders, n.foundersKnown = id.KnownFounders(); !n.foundersKnown {
		n.founders = id.Founders(n.cfg.ID)
	}
}

// learnFounders takes the founders a leader's snapshot names (apply
// goroutine) when this member does not know them, and records them in its
// identity before the snapshot is recorded: the image the envelope came
// in is not kept.
func (n *Node) learnFounders(founders []uint64) error {
	n.memberMu.RLock()
	known := n.foundersKnown
	n.memberMu.RUnlock()
	if known || len(founders) == 0 {
		return nil
	}
	founders = slices.Sorted(slices.Values(founders))
	if err := n.cfg.Engine.SetFounders(n.rep, founders); err != nil {
		return err
	}
	n.memberMu.Lock()
	n.founders, n.foundersKnown = founders, true
	n.memberMu.Unlock()
	n.log.Info("learned the group's founding voters from the leader's snapshot", "founders", founders)
	return nil
}

// snapshotMagic starts a raft snapshot's data: the address book travels
// with the state machine's image, so a member that catches up by snapshot
// learns the addresses of members added in the entries it skipped, and so
// do the group's founding voters, which a member added later cannot tell
// from its peers (Membership.Founders). A snapshot without Founders (from
// a leader that does not know them, or of an older version) leaves the
// receiver's as they are.
const snapshotMagic = "SKVS1"

type snapshotEnvelope struct {
	Addrs    map[uint64]string `json:"addrs"`
	Founders []uint64          `json:"founders,omitempty"`
	Removed  []uint64          `json:"removed,omitempty"` // Membership.Removed
}

func (n *Node) wrapSnapshot(image []byte) ([]byte, error) {
	n.memberMu.RLock()
	env := snapshotEnvelope{Addrs: n.addrs, Removed: n.removed}
	if n.foundersKnown {
		env.Founders = n.founders
	}
	head, err := json.Marshal(env)
	n.memberMu.RUnlock()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(snapshotMagic)+binary.MaxVarintLen64+len(head)+len(image))
	out = append(out, snapshotMagic...)
	out = binary.AppendUvarint(out, uint64(len(head)))
	out = append(out, head...)
	return append(out, image...), nil
}

func unwrapSnapshot(data []byte) (snapshotEnvelope, []byte, error) {
	var env snapshotEnvelope
	if !bytes.HasPrefix(data, []byte(snapshotMagic)) {
		return env, nil, fmt.Errorf("snapshot data does not start with %q", snapshotMagic)
	}
	rest := data[len(snapshotMagic):]
	size, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < size {
		return env, nil, errors.New("snapshot envelope truncated")
	}
	if err := json.Unmarshal(rest[k:k+int(size)], &env); err != nil {
		return env, nil, fmt.Errorf("snapshot envelope: %w", err)
	}
	return env, rest[k+int(size):], nil
}

// publishAddrs tells the network the address of every member it may not
// know (transport.AddrSetter).
func (n *Node) publishAddrs(book map[uint64]string) {
	if s, ok := n.cfg.Network.(transport.AddrSetter); ok {
		for id, addr := range book {
			s.SetAddr(n.cfg.Group, id, addr)
		}
	}
}

// saveMembers persists the membership after a batch that changed it
// (storage.Identity.Members), so a restart with the current members as
// --peers is accepted.
func (n *Node) saveMembers() error {
	if !n.membersChanged {
		return nil
	}
	n.membersChanged = false
	m := n.Members()
	members := map[uint64]string{}
	for _, id := range slices.Concat(m.Voters, m.Learners) {
		members[id] = m.Addrs[id]
	}
	return n.cfg.Engine.SetMembers(n.rep, members, m.Removed)
}

// unionSorted returns the sorted union of two sorted id lists.
func unionSorted(a, b []uint64) []uint64 {
	return slices.Compact(slices.Sorted(slices.Values(slices.Concat(a, b))))
}

func decodeConfChange(e *raftpb.Entry) (*raftpb.ConfChangeV2, error) {
	switch e.GetType() {
	case raftpb.EntryType_EntryConfChange:
		var cc raftpb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
			return nil, fmt.Errorf("entry %d: %w", e.GetIndex(), err)
		}
		return cc.AsV2(), nil
	default:
		var cc raftpb.ConfChangeV2
		if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
			return nil, fmt.Errorf("entry %d: %w", e.GetIndex(), err)
		}
		return &cc, nil
	}
}

// replayConfChanges returns the configuration after applying, to cs, every
// configuration change among ents up to index upTo, as raft applied them
// before a restart, with the addresses of the members they added and the
// ids of those they removed. raft restarts from the snapshot's configuration and
// hands back only entries above the applied index: the changes between the
// two are replayed here, or a restarted member would run with a stale
// membership.
func replayConfChanges(cs *raftpb.ConfState, ents []*raftpb.Entry, upTo uint64) (_ *raftpb.ConfState, addrs map[uint64]string, removed []uint64, err error) {
	chg := confchange.Changer{Tracker: tracker.MakeProgressTracker(1, 0), LastIndex: upTo}
	cfg, prs, err := confchange.Restore(chg, cs)
	if err != nil {
		return nil, nil, nil, err
	}
	chg.Tracker.Config, chg.Tracker.Progress = cfg, prs
	addrs = map[uint64]string{}
	for _, e := range ents {
		if e.GetIndex() > upTo {
			break
		}
		if t := e.GetType(); t != raftpb.EntryType_EntryConfChange && t != raftpb.EntryType_EntryConfChangeV2 {
			continue
		}
		cc, err := decodeConfChange(e)
		if err != nil {
			return nil, nil, nil, err
		}
		if autoLeave, ok := cc.EnterJoint(); ok {
			cfg, prs, err = chg.EnterJoint(autoLeave, cc.GetChanges()...)
		} else if cc.LeaveJoint() {
			cfg, prs, err = chg.LeaveJoint()
		} else {
			cfg, prs, err = chg.Simple(cc.GetChanges()...)
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("replay configuration change at %d: %w", e.GetIndex(), err)
		}
		chg.Tracker.Config, chg.Tracker.Progress = cfg, prs
		var ctx changeContext
		_ = json.Unmarshal(cc.GetContext(), &ctx)
		for _, c := range cc.GetChanges() {
			switch {
			case c.GetType() == raftpb.ConfChangeType_ConfChangeRemoveNode:
				removed = append(removed, c.GetNodeId())
			case ctx.Addr != "":
				addrs[c.GetNodeId()] = ctx.Addr
			}
		}
	}
	return chg.Tracker.ConfState(), addrs, slices.Sorted(slices.Values(removed)), nil
}

// bootStorage is the node's MemoryStorage with the configuration raft
// starts from replaced by the replayed one (see replayConfChanges).
type bootStorage struct {
	*raft.MemoryStorage
	cs *raftpb.ConfState
}

func (s bootStorage) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	hs, _, err := s.MemoryStorage.InitialState()
	return hs, s.cs, err
}
