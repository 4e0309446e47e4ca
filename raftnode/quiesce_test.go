package raftnode_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/linearizability"
	"github.com/shardkv/shardkv/raftnode"
)

// The defaults' election timeout (25 ticks of 10 ms): a quiesced member
// must tell a dead leader within about one of it.
const electionTimeout = 250 * time.Millisecond

// quiescedGroup starts a group of three processes, writes once and waits
// until the group quiesces; ctx bounds the test's calls.
func quiescedGroup(t *testing.T) (processes, *raftnode.Node, context.Context) {
	t.Helper()
	p := grpcProcesses(t, 3)
	lead := waitLeader(t, p.nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if _, err := lead.Propose(ctx, encodeCmd('a', "x", "1")); err != nil {
		t.Fatal(err)
	}
	awaitQuiesced(t, p.nodes, 5*time.Second)
	return p, lead, ctx
}

// awaitQuiesced waits until every member of nodes is quiesced.
func awaitQuiesced(t *testing.T, nodes []*raftnode.Node, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !allQuiesced(nodes) {
		if time.Now().After(deadline) {
			for _, n := range nodes {
				t.Logf("member %d: %+v", n.Status().ID, n.Status())
			}
			t.Fatalf("the idle group did not quiesce within %v", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func allQuiesced(nodes []*raftnode.Node) bool {
	return !slices.ContainsFunc(nodes, func(n *raftnode.Node) bool { return !n.Status().Quiesced })
}

// TestIdleGroupQuiesces: an idle group over gRPC stops ticking and
// heartbeating, stays so while idle, wakes for a proposal and a read,
// serves them, and quiesces again; its quiesced members count as heard
// from as long as their processes name them (and no longer once one
// dies), so the membership checks see what is really reachable.
func TestIdleGroupQuiesces(t *testing.T) {
	p, lead, ctx := quiescedGroup(t)
	nodes, kills := p.nodes, p.kill

	// Quiet: nothing moves for several election timeouts, nobody wakes
	// (not even to quiesce again at once).
	before := lead.Status()
	var times []uint64
	for _, n := range nodes {
		times = append(times, n.Status().Quiescences)
	}
	time.Sleep(4 * electionTimeout)
	for i, n := range nodes {
		st := n.Status()
		if !st.Quiesced || st.Quiescences != times[i] || st.Term != before.Term || st.Leader != before.ID {
			t.Fatalf("member %d woke or changed while idle: %+v (leader before: %+v)", st.ID, st, before)
		}
	}
	for _, n := range nodes[1:] {
		if id := n.Status().ID; !lead.HeardRecently(id) && id != lead.Status().ID {
			t.Fatalf("quiesced member %d not counted as heard from", id)
		}
	}

	// A proposal wakes the group and is served; a read too.
	start := time.Now()
	if _, err := lead.Propose(ctx, encodeCmd('a', "x", "2")); err != nil {
		t.Fatal(err)
	}
	if lead.Status().Quiesced {
		t.Fatal("the leader is still quiesced after a proposal")
	}
	if err := lead.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("proposal and read on a quiesced group: %v", time.Since(start))
	awaitQuiesced(t, nodes, 5*time.Second)

	// A dead follower's process stops naming it: after an election
	// timeout it is no longer heard from.
	var dead *raftnode.Node
	for i, n := range nodes {
		if n != lead {
			dead = n
			kills[i]()
			break
		}
	}
	id := dead.Status().ID
	time.Sleep(2 * electionTimeout)
	if lead.HeardRecently(id) {
		t.Fatalf("member %d, dead for two election timeouts, still counts as heard from", id)
	}
}

// TestQuiescedGroupReplacesDeadLeader: when the leader of a quiesced group
// dies, its followers stop seeing it named, wake, and elect one of
// themselves, which serves.
func TestQuiescedGroupReplacesDeadLeader(t *testing.T) {
	p, lead, ctx := quiescedGroup(t)
	nodes, kills := p.nodes, p.kill
	var rest []*raftnode.Node
	for i, n := range nodes {
		if n == lead {
			kills[i]()
		} else {
			rest = append(rest, n)
		}
	}
	start := time.Now()
	next := waitLeader(t, rest)
	took := time.Since(start)
	t.Logf("new leader %d after %v", next.Status().ID, took)
	// Busy, a group elects within one to two election timeouts; quiesced,
	// the followers first need an election timeout to miss the leader.
	if took > 8*electionTimeout {
		t.Fatalf("the quiesced group took %v to replace its dead leader", took)
	}
	if _, err := next.Propose(ctx, encodeCmd('a', "x", "2")); err != nil {
		t.Fatal(err)
	}
}

// TestQuiescingGroupIsLinearizable: clients that pause between operations
// long enough for the group to quiesce (up to 300 ms; it quiesces after
// about 100 ms idle) write on the leader and read on every member, so
// operations keep waking quiesced leaders and followers, while the leader
// is killed; porcupine checks the history. Seeded (SHARDKV_SEED reruns).
func TestQuiescingGroupIsLinearizable(t *testing.T) {
	seed := testSeed(t)
	p := grpcProcesses(t, 3)
	waitLeader(t, p.nodes)
	alive := func(i int) bool { return !stopped(p.nodes[i]) }
	var (
		rec       linearizability.Recorder
		wg        sync.WaitGroup
		stop      = make(chan struct{})
		quiescent atomic.Int64 // operations that found their member quiesced and succeeded
	)
	for client := range 4 {
		rng := rand.New(rand.NewPCG(seed, uint64(client)))
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(rng.IntN(300)) * time.Millisecond):
				}
				m := rng.IntN(len(p.nodes))
				if !alive(m) {
					continue
				}
				n := p.nodes[m]
				wasQuiesced := n.Status().Quiesced
				key := fmt.Sprintf("k%d", rng.IntN(2))
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				call := rec.Now()
				if i%2 == 0 {
					in := linearizability.Input{Op: linearizability.Get, Key: key}
					if err := n.ReadIndex(ctx); err == nil {
						v, found := p.sms[m].get(key)
						rec.Done(client, in, linearizability.Output{Value: v, Found: found}, call, rec.Now())
						if wasQuiesced {
							quiescent.Add(1)
						}
					}
				} else {
					in := linearizability.Input{Op: linearizability.Append, Key: key, Value: fmt.Sprintf("<%d.%d>", client, i)}
					if _, err := n.Propose(ctx, encodeCmd('a', key, in.Value)); err != nil {
						rec.Unknown(client, in, call)
					} else {
						rec.Done(client, in, linearizability.Output{}, call, rec.Now())
						if wasQuiesced {
							quiescent.Add(1)
						}
					}
				}
				cancel()
			}
		})
	}
	time.Sleep(3 * time.Second)
	lead := waitLeader(t, p.nodes)
	for i, n := range p.nodes {
		if n == lead {
			p.kill[i]()
		}
	}
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d operations, %d of them served by a member found quiesced", rec.Len(), quiescent.Load())
	if quiescent.Load() < 5 {
		t.Fatal("fewer than 5 operations were served by a quiesced member: quiesced members do not serve, or the test tested nothing")
	}
	if err := rec.Check(t.TempDir(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// stopped reports whether n was stopped.
func stopped(n *raftnode.Node) bool {
	select {
	case <-n.Done():
		return true
	default:
		return false
	}
}

// TestQuiescedLeaderChecksMembershipAgainstWhoAnswers: a follower of a
// quiesced group dies; removing the other follower would leave the
// leader alone with the dead one, and the leader, woken by the request,
// must see that and refuse (a review found the check counting the dead
// member as heard, from the clock that stood still while quiesced).
func TestQuiescedLeaderChecksMembershipAgainstWhoAnswers(t *testing.T) {
	p, lead, ctx := quiescedGroup(t)
	var dead, other *raftnode.Node
	for i, n := range p.nodes {
		switch {
		case n == lead:
		case dead == nil:
			dead = n
			p.kill[i]()
		default:
			other = n
		}
	}
	time.Sleep(4 * electionTimeout)
	if !lead.Status().Quiesced {
		t.Fatal("the leader woke with nothing to do")
	}
	_, err := lead.ChangeMembership(ctx, raftnode.MemberChange{Kind: raftnode.Remove, ID: other.Status().ID})
	if !errors.Is(err, rpcerr.ErrWouldLoseQuorum) {
		t.Fatalf("removing member %d with member %d dead: %v, want ErrWouldLoseQuorum", other.Status().ID, dead.Status().ID, err)
	}
}
