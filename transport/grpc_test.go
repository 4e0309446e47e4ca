package transport_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/transport"
)

type recorder struct {
	mu          sync.Mutex
	got         []*raftpb.Message
	unreachable []uint64
}

func (r *recorder) Step(_ context.Context, m *raftpb.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return nil
}

func (r *recorder) ReportUnreachable(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable = append(r.unreachable, id)
}

func (r *recorder) count() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got), len(r.unreachable)
}

// process is one server process hosting replicas.
type process struct {
	addr string
	srv  *grpc.Server
	net  *transport.GRPCNetwork
	raft *transport.Server
}

func startProcess(t *testing.T, resolve transport.Resolver) *process {
	return startClusterProcess(t, 7, resolve)
}

// startClusterProcess starts a process of the cluster with id cluster.
func startClusterProcess(t *testing.T, cluster uint64, resolve transport.Resolver) *process {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(rpc.ServerOptions(rpc.CheckClusterID(cluster, slog.New(slog.DiscardHandler))...)...)
	s := transport.NewServer()
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	p := &process{addr: lis.Addr().String(), srv: g, raft: s,
		net: transport.NewGRPCNetwork(s, resolve, rpc.DialOptions(rpc.WithClusterID(cluster)...)...)}
	t.Cleanup(func() { p.net.Close(); g.Stop() })
	return p
}

func TestGRPCDeliversMessagesAndChunkedSnapshots(t *testing.T) {
	a, b := processPair(t, 7, 7)
	ta, ra := a.join(t, 1)
	_, rb := b.join(t, 2)
	if _, err := b.net.Join(1, 2, rb); err == nil {
		t.Fatal("joining twice as the same member succeeded")
	}

	var msgs []*raftpb.Message
	for i := 0; i < 1000; i++ {
		msgs = append(msgs, &raftpb.Message{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(i))})
	}
	ta.Send(msgs)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := rb.count(); n == 1000 {
			break
		}
		if time.Now().After(deadline) {
			n, _ := rb.count()
			t.Fatalf("delivered %d of 1000 messages", n)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A snapshot three and a half chunks long arrives whole.
	data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20+1<<19)/16)
	snap := &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)),
		Snapshot: &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(9)), Term: new(uint64(2))}}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ta.SendSnapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	rb.mu.Lock()
	last := rb.got[len(rb.got)-1]
	rb.mu.Unlock()
	if !bytes.Equal(last.GetSnapshot().GetData(), data) || last.GetSnapshot().GetMetadata().GetIndex() != 9 {
		t.Fatalf("snapshot arrived damaged: %d bytes, index %d", len(last.GetSnapshot().GetData()), last.GetSnapshot().GetMetadata().GetIndex())
	}

	// A member with no known address is reported unreachable.
	ta.Send([]*raftpb.Message{{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(3))}})
	if _, u := ra.count(); u != 1 {
		t.Fatalf("%d unreachable reports, want 1", u)
	}
}

func TestGRPCReportsDeadPeerUnreachable(t *testing.T) {
	var dead string
	{
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead = lis.Addr().String()
		lis.Close()
	}
	resolve := func(group, id uint64) (string, bool) { return dead, true }
	ta, ra := startProcess(t, resolve).join(t, 1)
	ta.Send([]*raftpb.Message{{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(2))}})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, u := ra.count(); u > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a message to a dead peer was never reported unreachable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	snap := &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum(), To: new(uint64(2)), Snapshot: &raftpb.Snapshot{}}
	if err := ta.SendSnapshot(ctx, snap); err == nil {
		t.Fatal("a snapshot to a dead peer succeeded")
	}
}

// TestGRPCLargeMessagesUnderLoad sends ten 3 MiB messages in one call, one
// message close to the largest allowed size, and many small ones from
// concurrent senders: every message arrives and none is reported
// unreachable. (Batches used to grow past gRPC's 4 MiB default receive
// limit and lose everything in them.)
func TestGRPCLargeMessagesUnderLoad(t *testing.T) {
	ta, ra, rb := memberPair(t, 7, 7)
	entry := func(size int) *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MessageType_MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(2)),
			Entries: []*raftpb.Entry{{Data: bytes.Repeat([]byte{'x'}, size)}}}
	}
	var big []*raftpb.Message
	for range 10 {
		big = append(big, entry(3<<20))
	}
	big = append(big, entry(rpc.MaxMessageBytes-(1<<20)))
	var wg sync.WaitGroup
	for s := range 4 {
		wg.Go(func() {
			for i := range 200 {
				ta.Send([]*raftpb.Message{{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(2)), Term: new(uint64(s*1000 + i))}})
			}
		})
	}
	ta.Send(big)
	wg.Wait()
	want := len(big) + 4*200
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, _ := rb.count()
		_, u := ra.count()
		if u > 0 {
			t.Fatalf("%d messages reported unreachable (%d of %d delivered)", u, n, want)
		}
		if n == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d of %d messages", n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGRPCRefusesAnotherCluster: a process of another cluster cannot reach
// this one's replicas, neither with messages nor with snapshots.
func TestGRPCRefusesAnotherCluster(t *testing.T) {
	ta, ra, rb := memberPair(t, 1, 2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Raft sends heartbeats on: the refused stream is noticed by the
		// next send.
		ta.Send([]*raftpb.Message{{Type: raftpb.MessageType_MsgHeartbeat.Enum(), From: new(uint64(1)), To: new(uint64(2))}})
		if _, u := ra.count(); u > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a message to another cluster was never reported unreachable")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, _ := rb.count(); n != 0 {
		t.Fatalf("another cluster's replica received %d messages", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap := &raftpb.Message{Type: raftpb.MessageType_MsgSnap.Enum(), From: new(uint64(1)), To: new(uint64(2)),
		Snapshot: &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(1)), Term: new(uint64(1))}}}
	err := ta.SendSnapshot(ctx, snap)
	if err == nil || !rpc.IsClusterMismatch(errors.Unwrap(err)) && !strings.Contains(fmt.Sprint(err), "cluster id mismatch") {
		t.Fatalf("snapshot to another cluster: %v", err)
	}
}

// processPair starts two processes, of clusters ca and cb, each resolving
// the other's member of group 1: member 1 at the first, 2 at the second.
func processPair(t *testing.T, ca, cb uint64) (*process, *process) {
	t.Helper()
	resolve, set := memberResolver(func(group uint64) bool { return group == 1 })
	a, b := startClusterProcess(t, ca, resolve), startClusterProcess(t, cb, resolve)
	set(a.addr, b.addr)
	return a, b
}

// memberResolver resolves member 1 to the first address set gives it and
// member 2 to the second, in the groups groupOK accepts.
func memberResolver(groupOK func(group uint64) bool) (resolve transport.Resolver, set func(addr1, addr2 string)) {
	addrs := map[uint64]string{}
	var mu sync.Mutex
	resolve = func(group, id uint64) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		a, ok := addrs[id]
		return a, ok && groupOK(group)
	}
	return resolve, func(addr1, addr2 string) {
		mu.Lock()
		addrs[1], addrs[2] = addr1, addr2
		mu.Unlock()
	}
}

// join hosts member id of group 1 on p; the recorder gets what it receives.
func (p *process) join(t *testing.T, id uint64) (transport.Transport, *recorder) {
	t.Helper()
	r := &recorder{}
	tr, err := p.net.Join(1, id, r)
	if err != nil {
		t.Fatal(err)
	}
	return tr, r
}

// memberPair starts two processes, of clusters ca and cb, hosting members 1
// and 2 of group 1; it returns member 1's transport and both recorders.
func memberPair(t *testing.T, ca, cb uint64) (transport.Transport, *recorder, *recorder) {
	t.Helper()
	a, b := processPair(t, ca, cb)
	ta, ra := a.join(t, 1)
	_, rb := b.join(t, 2)
	return ta, ra, rb
}

// TestHeartbeatsOfManyGroupsShareBatches: a hundred groups hosted on the
// same two processes heartbeat each on its own phase; their plain
// heartbeats travel together in a few batches instead of one write each,
// and every one arrives.
func TestHeartbeatsOfManyGroupsShareBatches(t *testing.T) {
	const groups = 100
	resolve, set := memberResolver(func(uint64) bool { return true })
	a, b := startProcess(t, resolve), startProcess(t, resolve)
	set(a.addr, b.addr)
	var senders []transport.Transport
	var receivers []*recorder
	for g := uint64(1); g <= groups; g++ {
		ta, err := a.net.Join(g, 1, &recorder{})
		if err != nil {
			t.Fatal(err)
		}
		r := &recorder{}
		if _, err := b.net.Join(g, 2, r); err != nil {
			t.Fatal(err)
		}
		senders, receivers = append(senders, ta), append(receivers, r)
	}
	// Open the stream first, so that the count is of heartbeats alone.
	senders[0].Send([]*raftpb.Message{{Type: raftpb.MessageType_MsgApp.Enum(), To: new(uint64(2)), From: new(uint64(1))}})
	waitFor(t, func() bool { n, _ := receivers[0].count(); return n == 1 })
	before, _ := b.raft.Received()

	// One heartbeat per group, spread over a heartbeat period (50 ms).
	for _, ta := range senders {
		ta.Send([]*raftpb.Message{{Type: raftpb.MessageType_MsgHeartbeat.Enum(), To: new(uint64(2)), From: new(uint64(1)), Term: new(uint64(1))}})
		time.Sleep(500 * time.Microsecond)
	}
	for i, r := range receivers {
		want := 1
		if i == 0 {
			want = 2
		}
		waitFor(t, func() bool { n, _ := r.count(); return n == want })
	}
	after, _ := b.raft.Received()
	t.Logf("%d heartbeats in %d batches", groups, after-before)
	if after-before > groups/4 {
		t.Errorf("%d heartbeats took %d batches: not coalesced", groups, after-before)
	}
}

// barrier sends msgs from tr and waits until r has them all: a process
// sends to a peer process on one ordered stream, so whatever tr's process
// sent that peer before (messages and quiesced names) has arrived too.
func barrier(t *testing.T, tr transport.Transport, r *recorder, msgs []*raftpb.Message) {
	t.Helper()
	n, _ := r.count()
	tr.Send(msgs)
	waitFor(t, func() bool { m, _ := r.count(); return m >= n+len(msgs) })
}

// namedTwiceMore waits until each control (the QuiescedAt of a member
// that stays quiesced, one per stream under watch) has been named anew
// twice since the call: two naming rounds of each stream were sent and
// heard since then. A check that some member was not named since only
// proves something once they were: on a stalled machine the naming loop
// may not run at all during a sleep of a few QuiescedIntervals, and then
// "nothing changed" holds whether the product is right or not. Call it
// after what the check is about happened (a wake, a close), and after a
// barrier where names sent before that must be ordered first.
func namedTwiceMore(t *testing.T, what string, controls ...func() time.Time) {
	t.Helper()
	last := make([]time.Time, len(controls))
	for i, at := range controls {
		last[i] = at()
	}
	end := time.Now().Add(10 * time.Second)
	for i, at := range controls {
		for rounds := 0; rounds < 2; {
			if now := at(); now.After(last[i]) {
				last[i], rounds = now, rounds+1
				continue
			}
			if time.Now().After(end) {
				t.Fatalf("%s: control %d named anew %d times of 2 in 10 s, so the check would prove nothing", what, i, rounds)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not met in 10 s")
		}
	}
}

// TestForgetDropsAGroupsAddresses: addresses recorded by SetAddr win over
// the resolver's until the process forgets the group (it dropped its
// replica): a replica of the group hosted later, of another copy of the
// id, must not reach the old copy's members at the ids they share.
func TestForgetDropsAGroupsAddresses(t *testing.T) {
	resolve := func(group, id uint64) (string, bool) { return fmt.Sprintf("resolved-%d-%d:1", group, id), true }
	n := transport.NewGRPCNetwork(transport.NewServer(), resolve)
	defer n.Close()
	n.SetAddr(2, 1, "old-copy:1")
	n.SetAddr(3, 1, "other-group:1")
	if a, _ := n.Addr(2, 1); a != "old-copy:1" {
		t.Fatalf("before Forget: %s", a)
	}
	n.Forget(2)
	if a, _ := n.Addr(2, 1); a != "resolved-2-1:1" {
		t.Fatalf("after Forget(2): group 2's member 1 at %s, want the resolver's", a)
	}
	if a, _ := n.Addr(3, 1); a != "other-group:1" {
		t.Fatalf("after Forget(2): group 3's member 1 at %s", a)
	}
}
