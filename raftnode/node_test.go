package raftnode_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/linearizability"
	"github.com/shardkv/shardkv/internal/memnet"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// appendAll runs proposers concurrent goroutines, each appending count
// unique tokens to its own key, and returns what each key must hold and the
// tokens whose outcome was unknown.
func appendAll(t *testing.T, c *cluster, proposers, count int) (want map[string]string, unknown []string) {
	t.Helper()
	want = map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for p := 0; p < proposers; p++ {
		wg.Go(func() {
			key := fmt.Sprintf("k%d", p)
			for i := 0; i < count; i++ {
				tok := fmt.Sprintf("[%d.%d]", p, i)
				_, err := c.propose(ctx, encodeCmd('a', key, tok))
				mu.Lock()
				if err != nil {
					unknown = append(unknown, tok)
				} else {
					want[key] += tok
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return want, unknown
}

// mustAppendAll is appendAll on a healthy network, where every proposal
// must be acknowledged: it fails the test if any outcome was unknown.
func mustAppendAll(t *testing.T, c *cluster, proposers, count int) map[string]string {
	t.Helper()
	want, unknown := appendAll(t, c, proposers, count)
	if len(unknown) > 0 {
		t.Fatalf("proposals failed on a healthy network: %v", unknown)
	}
	return want
}

func TestAgreement(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d replicas", size), func(t *testing.T) {
			c := newCluster(t, size, nil)
			c.leader()
			c.waitConverged(mustAppendAll(t, c, 5, 20))
		})
	}
}

func TestLeaderCrashAndReelection(t *testing.T) {
	c := newCluster(t, 3, nil)
	old := c.leader()
	ctx := context.Background()
	if _, err := c.propose(ctx, encodeCmd('p', "x", "1")); err != nil {
		t.Fatal(err)
	}
	c.crash(old)
	start := time.Now()
	next := c.leader()
	if next == old {
		t.Fatalf("crashed member %d still leads", old)
	}
	t.Logf("new leader %d after %v", next, time.Since(start))
	if _, err := c.propose(ctx, encodeCmd('a', "x", "2")); err != nil {
		t.Fatal(err)
	}
	c.start(old)
	c.waitConverged(map[string]string{"x": "12"})
}

func TestPartitions(t *testing.T) {
	c := newCluster(t, 5, nil)
	lead := c.leader()
	var minority, majority []uint64
	minority = append(minority, lead)
	for _, id := range c.peers {
		switch {
		case id == lead:
		case len(minority) < 2:
			minority = append(minority, id)
		default:
			majority = append(majority, id)
		}
	}
	c.net.Partition(testGroup, minority, majority)

	// The partitioned leader cannot commit: its proposal fails (leader
	// changed once CheckQuorum demotes it, or times out), never succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := c.node(lead).Propose(ctx, encodeCmd('a', "x", "[minority]"))
	cancel()
	if err == nil {
		t.Fatal("a minority leader committed a proposal")
	}
	t.Logf("minority proposal failed as expected: %v", err)
	minorityApplied := c.node(minority[1]).Status().Applied

	// The majority elects a leader and makes progress.
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.propose(ctx, encodeCmd('a', "x", "[majority]"), majority...); err != nil {
		t.Fatalf("majority made no progress: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := c.node(minority[1]).Status().Applied; got != minorityApplied {
		t.Fatalf("minority member applied %d -> %d while partitioned", minorityApplied, got)
	}

	c.net.Heal()
	if _, err := c.propose(ctx, encodeCmd('a', "x", "[healed]")); err != nil {
		t.Fatal(err)
	}
	// The minority's entry may have been lost or, never, applied twice.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := true
		for _, id := range c.peers {
			v, _ := c.sm(id).get("x")
			if strings.Count(v, "[minority]") > 1 || !strings.HasSuffix(v, "[majority][healed]") {
				ok = false
				if time.Now().After(deadline) {
					t.Fatalf("member %d holds %q", id, v)
				}
			}
		}
		if ok {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCrashRestartKeepsAcknowledged(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.leader()
	want := mustAppendAll(t, c, 3, 10)
	// One follower at a time.
	for _, id := range c.peers {
		c.crash(id)
		more, _ := appendAll(t, c, 1, 3)
		for k, v := range more {
			want[k] += v
		}
		c.start(id)
		c.waitConverged(want)
	}
	// Everybody at once.
	for _, id := range c.peers {
		c.crash(id)
	}
	for _, id := range c.peers {
		c.start(id)
	}
	c.leader()
	c.waitConverged(want)
	more, _ := appendAll(t, c, 1, 3)
	for k, v := range more {
		want[k] += v
	}
	c.waitConverged(want)
}

func TestLaggingFollowerCatchesUpBySnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries = 20
		cfg.CatchUpEntries = 5
	})
	lead := c.leader()
	var lagging uint64
	for _, id := range c.peers {
		if id != lead {
			lagging = id
			break
		}
	}
	c.net.Isolate(testGroup, lagging)
	want := mustAppendAll(t, c, 2, 50)
	c.net.Heal()
	c.waitConverged(want)
	if c.sm(lagging).restoreCount() == 0 {
		t.Fatal("lagging follower caught up without a snapshot: the log was not compacted")
	}
	// And it survives a restart from the restored state.
	c.crash(lagging)
	c.start(lagging)
	c.waitConverged(want)
}

func TestUnreliableNetwork(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.net.SetFaults(memnet.Faults{Drop: 0.1, Duplicate: 0.05, MaxDelay: 20 * time.Millisecond})
	c.leader()
	want, unknown := appendAll(t, c, 5, 20)
	c.net.SetFaults(memnet.Faults{})
	if _, err := c.propose(context.Background(), encodeCmd('p', "sync", "done")); err != nil {
		t.Fatal(err)
	}
	c.waitConverged(map[string]string{"sync": "done"})
	// Acknowledged appends appear exactly once and in order; unknown ones at
	// most once.
	for _, id := range c.peers {
		sm := c.sm(id)
		for k, v := range want {
			got, _ := sm.get(k)
			rest := got
			for _, tok := range strings.SplitAfter(v, "]") {
				if tok == "" {
					continue
				}
				i := strings.Index(rest, tok)
				if i < 0 {
					t.Fatalf("member %d key %s: acknowledged %s missing or out of order in %q", id, k, tok, got)
				}
				rest = rest[i+len(tok):]
				if strings.Count(got, tok) != 1 {
					t.Fatalf("member %d key %s: %s applied %d times", id, k, tok, strings.Count(got, tok))
				}
			}
		}
		for _, tok := range unknown {
			for k := range want {
				got, _ := sm.get(k)
				if strings.Count(got, tok) > 1 {
					t.Fatalf("member %d: %s applied twice", id, tok)
				}
			}
		}
	}
	t.Logf("%d proposals with unknown outcome", len(unknown))
}

// TestLinearizable mixes puts, appends and ReadIndex reads from concurrent
// clients over a faulty network with a leader crash, and checks the whole
// history with porcupine.
func TestLinearizable(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.net.SetFaults(memnet.Faults{Drop: 0.05, MaxDelay: 10 * time.Millisecond})
	c.leader()
	var rec linearizability.Recorder
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for client := 0; client < 8; client++ {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("k%d", (client+i)%3)
				in := linearizability.Input{Key: key, Value: fmt.Sprintf("<%d.%d>", client, i)}
				switch i % 3 {
				case 0:
					in.Op = linearizability.Get
				case 1:
					in.Op = linearizability.Append
				default:
					in.Op = linearizability.Put
				}
				call := rec.Now()
				if in.Op == linearizability.Get {
					v, found, ok := c.read(key)
					if ok {
						rec.Done(client, in, linearizability.Output{Value: v, Found: found}, call, rec.Now())
					}
					continue
				}
				op := byte('p')
				if in.Op == linearizability.Append {
					op = 'a'
				}
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err := c.propose(ctx, encodeCmd(op, key, in.Value))
				cancel()
				if err != nil {
					rec.Unknown(client, in, call)
				} else {
					rec.Done(client, in, linearizability.Output{}, call, rec.Now())
				}
			}
		})
	}
	time.Sleep(1 * time.Second)
	crashed := c.leader()
	c.crash(crashed)
	time.Sleep(1 * time.Second)
	c.start(crashed)
	time.Sleep(1 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d operations", rec.Len())
	if err := rec.Check(t.TempDir(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// read is a linearizable read: ReadIndex on the leader, then the local
// state. ok is false when the read could not be confirmed.
func (c *cluster) read(key string) (value string, found, ok bool) {
	var n *raftnode.Node
	var sm *registers
	var id uint64
	c.mu.Lock()
	for i, node := range c.nodes {
		if node.Status().IsLeader {
			n, sm, id = node, c.sms[i], i
		}
	}
	c.mu.Unlock()
	if n == nil {
		return "", false, false // no leader right now: nothing observed
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := n.ReadIndex(ctx); err != nil {
		return "", false, false
	}
	// A crash (c.crash) may have stopped the member and be closing its
	// engine since the read index was reached: read only from a member
	// still running, under c.mu, which crash takes before it closes.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nodes[id] != n {
		return "", false, false
	}
	value, found = sm.get(key)
	return value, found, true
}

// TestProposeOnFollowerIsForwarded: a follower forwards proposals and reads
// to its leader and answers with the applied result; a member cut off long
// enough to know no leader refuses at once (certainly not applied), so
// callers move on instead of waiting.
func TestProposeOnFollowerIsForwarded(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.followedLeader()
	for _, id := range c.peers {
		if id == lead {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.node(id).Propose(ctx, encodeCmd('a', "k", fmt.Sprint(id)))
		if err == nil {
			err = c.node(id).ReadIndex(ctx)
		}
		cancel()
		if err != nil {
			t.Fatalf("follower %d: %v", id, err)
		}
	}
	var follower uint64
	for _, id := range c.peers {
		if id != lead {
			follower = id
		}
	}
	c.isolateUntilLeaderless(follower)
	start := time.Now()
	_, err := c.node(follower).Propose(context.Background(), encodeCmd('p', "x", "y"))
	if !errors.Is(err, rpcerr.ErrNotLeader) || !rpcerr.CertainlyNotApplied(err) {
		t.Fatalf("proposal on a member with no leader: %v", err)
	}
	if err := c.node(follower).ReadIndex(context.Background()); !errors.Is(err, rpcerr.ErrReadTimeout) {
		t.Fatalf("read on a member with no leader: %v", err)
	}
	// At once: waiting for a leader would take at least the two election
	// timeouts of a read's first retry. Bounded by one, not by a tighter
	// time that a loaded machine's scheduling could exceed.
	if d := time.Since(start); d > electionTimeout {
		t.Fatalf("a member with no leader took %v to refuse", d)
	}
}

func TestConcurrentReadsShareRounds(t *testing.T) {
	c := newCluster(t, 3, nil)
	lead := c.leader()
	if _, err := c.propose(context.Background(), encodeCmd('p', "a", "b")); err != nil {
		t.Fatal(err)
	}
	n := c.node(lead)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			errs <- n.ReadIndex(ctx)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// stoppedMember runs a cluster of three, appends to it, and stops one of
// its members: it returns the cluster, the member, what it had applied,
// its data directory and its engine, open for the test to damage.
func stoppedMember(t *testing.T) (c *cluster, victim, applied uint64, dir string, e *storage.Engine) {
	t.Helper()
	c = newCluster(t, 3, nil)
	c.leader()
	mustAppendAll(t, c, 1, 10)
	victim = c.peers[0]
	applied = c.node(victim).Status().Applied
	c.crash(victim)
	dir = filepath.Join(c.dir, fmt.Sprint(victim))
	e, err := storage.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c, victim, applied, dir, e
}

// startOn starts member victim of c on e, alone on a network of its own,
// closes e, and returns Start's error.
func startOn(t *testing.T, c *cluster, victim uint64, e *storage.Engine) error {
	t.Helper()
	defer e.Close()
	sm, err := openRegisters(e, storage.Replica{Group: testGroup, ID: victim})
	if err != nil {
		t.Fatal(err)
	}
	_, err = raftnode.Start(raftnode.Config{Group: testGroup, ID: victim, Peers: c.peers, Engine: e,
		Network: memnet.New(1), StateMachine: sm})
	return err
}

// TestCorruptedLogRefusesToStart damages a committed entry in the middle of
// a stopped member's log: the member must refuse to start, naming the data
// directory and the index, instead of serving.
func TestCorruptedLogRefusesToStart(t *testing.T) {
	c, victim, applied, dir, e := stoppedMember(t)
	// The documented layout: 'r' <group> <replica> 'l' <index>.
	key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{'r'}, testGroup), victim)
	key = binary.BigEndian.AppendUint64(append(key, 'l'), applied/2)
	if err := e.DB().Set(key, []byte("garbage!"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	err := startOn(t, c, victim, e)
	if !errors.Is(err, storage.ErrCorrupted) {
		t.Fatalf("started on a corrupted log: %v", err)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), fmt.Sprint("entry ", applied/2)) {
		t.Fatalf("error does not name the directory and index: %v", err)
	}
}

// TestLostLogTailRefusesToStart removes the newest committed entries of a
// stopped member's log, as a data directory restored from an older copy
// or a disk that lost synced writes would: its hard state says they were
// committed, and the member must refuse to start, saying so, rather than
// have raft panic on a commit index past its log.
func TestLostLogTailRefusesToStart(t *testing.T) {
	c, victim, applied, dir, e := stoppedMember(t)
	// The documented layout: 'r' <group> <replica> 'l' <index>.
	prefix := append(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{'r'}, testGroup), victim), 'l')
	from := binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), applied/2)
	to := binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), ^uint64(0))
	if err := e.DB().DeleteRange(from, to, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	err := startOn(t, c, victim, e)
	if !errors.Is(err, storage.ErrCorrupted) {
		t.Fatalf("started with its log's committed tail gone: %v", err)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), fmt.Sprint("ends at entry ", applied/2-1)) {
		t.Fatalf("error does not name the directory and the log's last entry: %v", err)
	}
	t.Log(err)
}

// TestRolledBackMemberStopsAlone restores a follower's data directory from
// an older copy: its log is whole, so it starts, but its leader knows it
// acknowledged entries the copy lacks, and raft panics at the leader's next
// message ("tocommit(N) is out of range"). The member must stop with an
// error saying so (ErrRaftPanicked), not panic on the goroutine that
// stepped the message (crashing the process with a stack), and the group
// goes on without it.
func TestRolledBackMemberStopsAlone(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.leader()
	mustAppendAll(t, c, 1, 10)
	victim := c.crashFollower()
	dir := filepath.Join(c.dir, fmt.Sprint(victim))
	old := filepath.Join(t.TempDir(), "old")
	if err := os.CopyFS(old, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	c.start(victim)
	mustAppendAll(t, c, 1, 20)
	// The victim applies, so it acknowledged, all of them.
	target := c.node(c.leader()).Status().Applied
	for deadline := time.Now().Add(20 * time.Second); c.node(victim).Status().Applied < target; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the victim did not apply up to %d", target)
		}
	}
	c.crash(victim)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(old)); err != nil {
		t.Fatal(err)
	}
	c.start(victim)
	n := c.node(victim)
	select {
	case <-n.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a member whose log lost acknowledged entries still runs 20s after it restarted")
	}
	if err := n.Err(); !errors.Is(err, raftnode.ErrRaftPanicked) || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("the rolled-back member stopped with %v, want ErrRaftPanicked saying its commit index is out of range", err)
	} else {
		t.Log(err)
	}
	mustAppendAll(t, c, 1, 5) // the other two go on
}
