package raftnode_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// addMember starts member id as a new, empty member (Config.Join) and adds
// it to the group as a learner.
func (c *cluster) addMember(ctx context.Context, id uint64) {
	c.t.Helper()
	c.joining[id] = true
	c.peers = append(c.peers, id)
	c.start(id)
	if _, err := c.node(c.leader()).ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.AddLearner, ID: id, Addr: fmt.Sprintf("127.0.0.1:%d", 9000+id)}); err != nil {
		c.t.Fatalf("add learner %d: %v", id, err)
	}
}

// addCaughtUp adds started member id as a learner, writes, and waits until
// it has applied what its leader has.
func (c *cluster) addCaughtUp(ctx context.Context, id uint64) {
	c.t.Helper()
	c.change(ctx, raftnode.MemberChange{Kind: raftnode.AddLearner, ID: id, Addr: fmt.Sprintf("127.0.0.1:%d", 9000+id)})
	mustAppendAll(c.t, c, 1, 3)
	deadline := time.Now().Add(10 * time.Second)
	for c.node(id).Status().Applied < c.node(c.leader()).Status().Applied {
		if time.Now().After(deadline) {
			c.t.Fatalf("member %d did not catch up", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// change retries a membership change on whoever leads until it is not
// refused because the learner is still behind.
func (c *cluster) change(ctx context.Context, ch raftnode.MemberChange) raftnode.Membership {
	c.t.Helper()
	for {
		m, err := c.node(c.leader()).ChangeMembership(ctx, ch)
		if err == nil {
			return m
		}
		if !errors.Is(err, rpcerr.ErrLearnerBehind) || ctx.Err() != nil {
			c.t.Fatalf("%s of %d: %v", ch.Kind, ch.ID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReplaceMemberBySnapshot replaces a member the way an operator
// replaces a dead machine: a new member, added as a learner, catches up by
// snapshot while writes go on, is promoted, and the dead one is removed;
// then a second original member is lost and the group still serves.
func TestReplaceMemberBySnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries = 20
		cfg.CatchUpEntries = 5
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := mustAppendAll(t, c, 2, 60) // compacts the log past the start
	dead := c.crashFollower()
	c.addMember(ctx, 4)
	more := mustAppendAll(t, c, 2, 30)
	for k, v := range more {
		want[k] += v // the same keys, appended to again
	}
	m := c.change(ctx, raftnode.MemberChange{Kind: raftnode.Replace, ID: 4, Old: dead})
	if !slices.Contains(m.Voters, 4) || slices.Contains(m.Voters, dead) || m.Joint {
		t.Fatalf("after replace: %+v", m)
	}
	if c.sm(4).restoreCount() == 0 {
		t.Fatal("the new member caught up without a snapshot")
	}
	c.peers = slices.DeleteFunc(c.peers, func(id uint64) bool { return id == dead })
	c.waitConverged(want)
	// A second original member is lost for good: members 4 and the last
	// original still form a quorum of three.
	second := c.leader()
	if second == 4 {
		for _, id := range c.peers {
			if id != 4 {
				second = id
				break
			}
		}
	}
	c.crash(second)
	c.peers = slices.DeleteFunc(c.peers, func(id uint64) bool { return id == second })
	after := mustAppendAll(t, c, 1, 10)
	for k, v := range after {
		want[k] += v
	}
	c.waitConverged(want)
}

// TestMembershipSurvivesRestart: a member restarted after a change, before
// any snapshot covers it, still has the changed membership (raft replays
// only entries above the applied index; the rest are replayed by Start).
func TestMembershipSurvivesRestart(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.addMember(ctx, 4)
	c.change(ctx, raftnode.MemberChange{Kind: raftnode.Promote, ID: 4})
	// Every member applies the promotion before the crash, so each must
	// find it on its own disk (a member that missed it would learn it
	// from the leader, which proves nothing).
	for _, id := range []uint64{1, 2, 3, 4} {
		for deadline := time.Now().Add(10 * time.Second); !slices.Equal(c.node(id).Members().Voters, []uint64{1, 2, 3, 4}); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("member %d never applied the promotion: %+v", id, c.node(id).Members())
			}
		}
	}
	for _, id := range []uint64{1, 2, 3, 4} {
		c.crash(id)
	}
	for _, id := range []uint64{1, 2, 3, 4} {
		c.start(id)
	}
	// Checked at once, before any leader could tell them.
	for _, id := range []uint64{1, 2, 3, 4} {
		m := c.node(id).Members()
		if !slices.Equal(m.Voters, []uint64{1, 2, 3, 4}) {
			t.Fatalf("member %d after restart: voters %v, want [1 2 3 4]", id, m.Voters)
		}
		if id != 4 && m.Addrs[4] != "127.0.0.1:9004" {
			t.Fatalf("member %d forgot member 4's address: %v", id, m.Addrs)
		}
	}
	c.leader()
	// Four voters need three: two members down stop the group, one does not.
	c.crash(4)
	mustAppendAll(t, c, 1, 5)
}

// TestMembershipRefusals: every refusal of the strict check changes
// nothing.
func TestMembershipRefusals(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lead := c.node(c.leader())
	before := lead.Members()
	follower := c.peers[0]
	if follower == lead.Status().ID {
		follower = c.peers[1]
	}
	for _, tc := range []struct {
		change raftnode.MemberChange
		want   error
	}{
		{raftnode.MemberChange{Kind: raftnode.AddLearner, ID: 2, Addr: "127.0.0.1:1"}, rpcerr.ErrMemberExists},
		{raftnode.MemberChange{Kind: raftnode.AddLearner, ID: 5, Addr: "127.0.0.1"}, rpcerr.ErrBadMemberAddr},
		{raftnode.MemberChange{Kind: raftnode.Promote, ID: 2}, rpcerr.ErrNotLearner},
		{raftnode.MemberChange{Kind: raftnode.Promote, ID: 9}, rpcerr.ErrUnknownMember},
		{raftnode.MemberChange{Kind: raftnode.Remove, ID: 9}, rpcerr.ErrUnknownMember},
		{raftnode.MemberChange{Kind: raftnode.ChangeKind(0), ID: 9}, rpcerr.ErrBadMemberChange},
	} {
		if _, err := lead.ChangeMembership(ctx, tc.change); !errors.Is(err, tc.want) {
			t.Errorf("%s of %d: %v, want %v", tc.change.Kind, tc.change.ID, err, tc.want)
		}
	}
	if _, err := c.node(follower).ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.Remove, ID: 3}); !errors.Is(err, rpcerr.ErrNotLeader) {
		t.Errorf("change on a follower: %v", err)
	}
	// A learner that never started is behind: not promoted.
	if _, err := lead.ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.AddLearner, ID: 5, Addr: "127.0.0.1:5"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lead.ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.Promote, ID: 5}); !errors.Is(err, rpcerr.ErrLearnerBehind) {
		t.Errorf("promote of a learner that never started: %v", err)
	}
	if _, err := lead.ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.AddLearner, ID: 6, Addr: "127.0.0.1:5"}); !errors.Is(err, rpcerr.ErrMemberAddrInUse) {
		t.Errorf("a learner at member 5's address: %v", err)
	}
	// A replace names its OLD's mistake first (NEW, a voter, is wrong too).
	if _, err := lead.ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.Replace, ID: 2, Old: 9}); !errors.Is(err, rpcerr.ErrUnknownMember) {
		t.Errorf("replace of unknown member 9: %v", err)
	}
	if _, err := lead.ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.Replace, ID: 2, Old: 5}); !errors.Is(err, rpcerr.ErrBadMemberChange) {
		t.Errorf("replace of learner 5: %v", err)
	}
	// One voter down of three: removing another live one would leave one
	// reachable voter of two.
	leadID := lead.Status().ID
	var down, other uint64
	for _, id := range []uint64{1, 2, 3} {
		if id == leadID {
			continue
		}
		if down == 0 {
			down = id
		} else {
			other = id
		}
	}
	c.crash(down)
	// The leader stops counting it after an election timeout of its own
	// ticks, which a loaded machine may deliver later than the wall clock.
	for deadline := time.Now().Add(10 * time.Second); lead.HeardRecently(down); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the leader still hears from member %d 10 s after it crashed", down)
		}
	}
	if _, err := lead.ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.Remove, ID: other}); !errors.Is(err, rpcerr.ErrWouldLoseQuorum) {
		t.Errorf("removal leaving no reachable quorum: %v", err)
	}
	// A change in the log and not applied (no quorum to commit it) blocks
	// the next one.
	c.crash(other)
	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := lead.ChangeMembership(sctx, raftnode.MemberChange{Kind: raftnode.Remove, ID: 5})
	scancel()
	if err == nil {
		t.Fatal("a change committed without a quorum")
	}
	if _, err := lead.ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.AddLearner, ID: 6, Addr: "127.0.0.1:6"}); !errors.Is(err, rpcerr.ErrMembershipChangeInProgress) && !errors.Is(err, rpcerr.ErrNotLeader) {
		t.Errorf("second change while one is pending: %v", err)
	}
	after := lead.Members()
	if !slices.Equal(after.Voters, before.Voters) {
		t.Errorf("refusals changed the voters: %v -> %v", before.Voters, after.Voters)
	}
}

// lostGroup starts a group of three, has proposers append count tokens
// each, waits until every member applied them, and crashes all three. It
// returns what the registers hold and the member that was the leader,
// which the test restarts alone, forced.
func lostGroup(t *testing.T, proposers, count int) (c *cluster, want map[string]string, survivor uint64) {
	t.Helper()
	c = newCluster(t, 3, nil)
	want = mustAppendAll(t, c, proposers, count)
	c.waitConverged(want)
	survivor = c.leader()
	for _, id := range c.peers {
		c.crash(id)
	}
	return c, want, survivor
}

// TestForceNewCluster: a group loses two of its three members for good; the
// survivor, restarted with ForceNewCluster, is the only voter, elects
// itself, still has every committed write, serves new ones, and takes new
// members again.
func TestForceNewCluster(t *testing.T) {
	c, want, survivor := lostGroup(t, 2, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.forced[survivor] = true
	c.start(survivor) // with the flags it always had
	c.peers = []uint64{survivor}
	if got := c.leader(); got != survivor {
		t.Fatalf("leader %d, want the survivor %d", got, survivor)
	}
	if m := c.node(survivor).Members(); !slices.Equal(m.Voters, []uint64{survivor}) || len(m.Learners) > 0 {
		t.Fatalf("membership after forcing: %+v", m)
	}
	c.waitConverged(want)
	if _, err := c.propose(ctx, encodeCmd('a', "after", "x")); err != nil {
		t.Fatal(err)
	}
	// Later restarts are ordinary.
	c.forced[survivor] = false
	c.crash(survivor)
	c.start(survivor)
	c.leader()
	c.addMember(ctx, 9)
	c.change(ctx, raftnode.MemberChange{Kind: raftnode.Promote, ID: 9})
	want["after"] = "x"
	c.waitConverged(want)
}

// TestForceNewClusterAboveCommit: a survivor whose state machine is ahead
// of the commit index it knows (it restored a leader's snapshot image newer
// than the snapshot's metadata) is forced: no new entry reuses an index
// its state machine already reflects, so a write acknowledged afterwards is
// applied (the review's reproduction: it was acknowledged and skipped).
func TestForceNewClusterAboveCommit(t *testing.T) {
	c, want, survivor := lostGroup(t, 1, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The state machine claims 20 more entries than the log committed.
	e, sm := openMember(t, c.dir, survivor)
	r := storage.Replica{Group: testGroup, ID: survivor}
	if err := e.DB().Set(r.StateKey(appliedSuffix...), binary.BigEndian.AppendUint64(nil, sm.Applied()+20), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	_ = e.Close()
	c.forced[survivor] = true
	c.start(survivor)
	c.peers = []uint64{survivor}
	c.leader()
	if _, err := c.propose(ctx, encodeCmd('p', "after", "forced")); err != nil {
		t.Fatal(err)
	}
	want["after"] = "forced"
	c.waitConverged(want)
}

// TestJoinedMembersLearnFounders: a group founded as 1, 2, 3 moves, one
// member at a time, to 4, 5, 6, each added member started with the
// members of its day as peers (5 with 2, 3, 4, 5). Every member knows the
// founders are 1, 2, 3 (Membership.Founders): the added ones learn them
// from the snapshot they catch up by and record them in their identity,
// so a restart keeps them. Before, member 5 took 4 for a founder.
func TestJoinedMembersLearnFounders(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	founders := []uint64{1, 2, 3}
	for _, step := range [][2]uint64{{1, 4}, {2, 5}, {3, 6}} {
		old, id := step[0], step[1]
		c.addMember(ctx, id)
		c.change(ctx, raftnode.MemberChange{Kind: raftnode.Replace, ID: id, Old: old})
		c.peers = slices.DeleteFunc(c.peers, func(p uint64) bool { return p == old })
		c.crash(old)
		mustAppendAll(t, c, 1, 3)
		for _, p := range c.peers {
			if got := c.node(p).Members().Founders; !slices.Equal(got, founders) {
				t.Fatalf("after %d replaced %d: member %d's founders %v, want %v", id, old, p, got, founders)
			}
			// Removed ids too: applied, or learned from the snapshot a
			// member joined by (6 joined after 1 and 2 were removed).
			if got, want := c.node(p).Members().Removed, founders[:old]; !slices.Equal(got, want) {
				t.Fatalf("after %d replaced %d: member %d's removed ids %v, want %v", id, old, p, got, want)
			}
		}
	}
	// A removed id is never a member again.
	if _, err := c.node(c.leader()).ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.AddLearner, ID: 2, Addr: "127.0.0.1:9102"}); !errors.Is(err, rpcerr.ErrMemberRemoved) {
		t.Fatalf("re-adding removed member 2: %v, want ErrMemberRemoved", err)
	}
	for _, id := range []uint64{4, 5, 6} {
		ident, ok, err := c.engines[id].LoadIdentity(storage.Replica{Group: testGroup, ID: id})
		if err != nil || !ok || !ident.Joined || !slices.Equal(ident.FoundingVoters, founders) {
			t.Fatalf("member %d's identity: %+v, %v, %v; want joined, founders %v", id, ident, ok, err, founders)
		}
		c.crash(id)
		c.start(id)
		if got := c.node(id).Members().Founders; !slices.Equal(got, founders) {
			t.Fatalf("member %d restarted: founders %v, want %v", id, got, founders)
		}
		if got := c.node(id).Members().Removed; !slices.Equal(got, founders) {
			t.Fatalf("member %d restarted: removed ids %v, want %v", id, got, founders)
		}
	}
	mustAppendAll(t, c, 1, 3)
}

// TestJoinedMemberRestartedBeforeItsFirstSnapshot: a member added to a
// running group whose process stops before the leader reached it, and
// restarts (without Join: `shardkv server` passes it only at a first
// start), still starts as a joiner: it learns the group's membership and
// founders from the leader, and never bootstraps a configuration of its
// start-up peers (a review found it did, naming itself a voter and its
// peers the founders, which its later snapshots passed on).
func TestJoinedMemberRestartedBeforeItsFirstSnapshot(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mustAppendAll(t, c, 1, 3)
	c.joining[4] = true
	c.peers = append(c.peers, 4)
	c.start(4)
	c.crash(4)
	c.start(4)
	if m := c.node(4).Members(); len(m.Voters) > 0 {
		t.Fatalf("member 4, restarted before the leader reached it, bootstrapped voters %v", m.Voters)
	}
	c.addCaughtUp(ctx, 4)
	m := c.node(4).Members()
	if !slices.Equal(m.Voters, []uint64{1, 2, 3}) || !slices.Equal(m.Learners, []uint64{4}) || !slices.Equal(m.Founders, []uint64{1, 2, 3}) {
		t.Fatalf("member 4 sees voters %v, learners %v, founders %v; want 1 2 3, 4, 1 2 3", m.Voters, m.Learners, m.Founders)
	}
}

// TestJoinedMemberRestartedBeforeItsSnapshotCame: a member added to a
// running group that heard its leader (a heartbeat: its hard state has
// the leader's term) and stopped before the leader's snapshot came
// restarts as a member that knows nothing, and catches up. The nemesis
// found it crashing at that restart (a nil configuration: only a hard
// state was stored, and the start took it for a member with a log).
func TestJoinedMemberRestartedBeforeItsSnapshotCame(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mustAppendAll(t, c, 1, 3)
	term := c.node(c.leader()).Status().Term
	c.joining[4] = true
	c.peers = append(c.peers, 4)
	c.start(4)
	c.crash(4)
	e, _ := openMember(t, c.dir, 4)
	hs := &raftpb.HardState{Term: new(term), Vote: new(uint64(0)), Commit: new(uint64(0))}
	if err := e.RaftLog(storage.Replica{Group: testGroup, ID: 4}).Append(hs, nil, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	c.start(4)
	c.addCaughtUp(ctx, 4)
	if m := c.node(4).Members(); !slices.Equal(m.Voters, []uint64{1, 2, 3}) || !slices.Equal(m.Learners, []uint64{4}) {
		t.Fatalf("member 4 sees voters %v, learners %v; want 1 2 3, 4", m.Voters, m.Learners)
	}
}

// TestStatusAfterRestartHasStoredTerm: a member restarted alone (its
// peers down, so no Ready brings a new hard state) reports the term and
// commit index it stored, not zero: a quiesced group's restarted
// follower may hear nothing that changes them for a long time.
func TestStatusAfterRestartHasStoredTerm(t *testing.T) {
	c := newCluster(t, 3, nil)
	mustAppendAll(t, c, 1, 3)
	id := c.leader()
	before := c.node(id).Status()
	for _, p := range c.peers {
		c.crash(p)
	}
	c.start(id)
	if st := c.node(id).Status(); st.Term < before.Term || st.Commit < before.Commit {
		t.Fatalf("restarted alone: term %d, commit %d; stored term %d, commit %d", st.Term, st.Commit, before.Term, before.Commit)
	}
}

// TestHeardPeersSurviveRestarts: a member says it heard from a peer once a
// raft message from it arrived (a leader hears from every follower), and
// still says so after a restart while the peer is down (what a founder
// starting on empty data is checked against: a peer that heard from it
// knows it ran); of a member it never heard from, it says not.
func TestHeardPeersSurviveRestarts(t *testing.T) {
	c := newCluster(t, 3, nil)
	mustAppendAll(t, c, 1, 3)
	leader := c.leader()
	follower := c.peers[0]
	if follower == leader {
		follower = c.peers[1]
	}
	if !c.node(leader).MemberProgress(follower).Heard {
		t.Fatalf("leader %d has not heard from follower %d", leader, follower)
	}
	if c.node(leader).MemberProgress(9).Heard {
		t.Fatal("the leader heard from member 9, which never ran")
	}
	c.crash(follower)
	c.crash(leader)
	c.start(leader)
	if !c.node(leader).MemberProgress(follower).Heard {
		t.Fatalf("member %d, restarted with member %d down, forgot it heard from it", leader, follower)
	}
}
