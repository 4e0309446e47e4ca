package raftnode_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// TestInteraction runs the transcripts in testdata/*.txt, in the manner of
// etcd raft's interaction tests: real raftnode members (Ready and apply
// loops, read rounds, Pebble storage, the registers state machine) whose clock and
// network belong to the test. Nothing happens unless a command makes it
// happen, so each transcript is the exact, repeatable story of one
// scenario. Rewrite the expected output after a deliberate change with
//
//	go test ./raftnode -run TestInteraction -rewrite
//
// and read the diff. Commands (ids are member ids; every member's pending
// Ready is handled, and printed, right after each input reaches it, as
// the real Ready loop would; messages wait in the network until delivered):
//
//	add-nodes N                 start members 1..N of one group
//	tick-election ID            tick ID until it campaigns
//	tick-heartbeat ID           tick ID one heartbeat interval
//	tick ID n=K                 tick ID K times
//	deliver-msgs [ID...] [type=T]  deliver the queued messages to each ID
//	                            (only those of raft type T, such as
//	                            MsgApp, ahead of earlier ones: a reordering
//	                            network; the others stay queued, in order)
//	drop-msgs [ID...]           lose the queued messages to each ID
//	stabilize                   deliver until no message is queued
//	isolate ID / heal           cut / restore every link of ID
//	propose ID KEY=VALUE [append]  Submit a put (or append) on ID: names it pN
//	read-index ID               ReadIndex on ID: names it rN
//	change-membership ID KIND MEMBER [addr=HOST:PORT]
//	                            ChangeMembership on ID (KIND add-learner,
//	                            promote or remove): names it cN
//	outcome NAME                wait for the outcome of pN, rN or cN
//	reads                       whether each member has a read round in
//	                            flight (asked of raft, not over)
//	stop ID                     Node.Stop
//	restart ID                  start a stopped ID again from its storage
//	                            (an in-process restart of the Node: the
//	                            network and its queue survive); messages
//	                            queued for it reach the new run
//	status                      every member's Status
//	kv                          every member's applied index and registers
//
// ID defaults to all members where it is optional.
func TestInteraction(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		if !strings.HasSuffix(path, ".txt") {
			return
		}
		e := &env{t: t, dir: t.TempDir(), router: newRouter(), members: map[uint64]*member{}, ops: map[string]*op{}}
		t.Cleanup(e.shutdown)
		datadriven.RunTest(t, path, e.handle)
	})
}

// Harness tuning: a heartbeat every 3 ticks, an election timeout of 6
// (randomised by raft to 6..11 ticks).
const (
	hbTicks       = 3
	electionTicks = 6
	// failsafe bounds every wait for a goroutine of the node under test;
	// a correct run never comes near it.
	failsafe = 10 * time.Second
)

type env struct {
	t       *testing.T
	dir     string
	router  *router
	peers   []uint64
	members map[uint64]*member
	ops     map[string]*op
	nProps  int
	nReads  int
	nChange int
	out     strings.Builder
}

type member struct {
	id      uint64
	node    *raftnode.Node
	raft    *manualRaft
	sm      *registers
	engine  *storage.Engine
	ticks   chan time.Time
	stopped bool
}

// op is a proposal or read in progress.
type op struct {
	name string
	read bool
	done chan opResult
	res  *opResult
}

type opResult struct {
	value any
	err   error
}

func (e *env) printf(format string, args ...any) { fmt.Fprintf(&e.out, format, args...) }

func (e *env) handle(t *testing.T, d *datadriven.TestData) string {
	e.t = t
	e.out.Reset()
	switch d.Cmd {
	case "add-nodes":
		e.addNodes(e.intArg(d, 0))
	case "tick-election":
		e.tickElection(e.member(d, 0))
	case "tick-heartbeat":
		e.tick(e.member(d, 0), hbTicks)
	case "tick":
		var n int
		d.ScanArgs(t, "n", &n)
		e.tick(e.member(d, 0), n)
	case "deliver-msgs":
		match := everyMessage
		if d.HasArg("type") {
			var name string
			d.ScanArgs(t, "type", &name)
			typ, ok := raftpb.MessageType_value[name]
			if !ok {
				t.Fatalf("%s: no raft message type %q", d.Pos, name)
			}
			match = func(m *raftpb.Message) bool { return m.GetType() == raftpb.MessageType(typ) }
		}
		for _, id := range e.ids(d) {
			e.deliver(id, match)
		}
	case "drop-msgs":
		for _, id := range e.ids(d) {
			for _, m := range e.router.take(id) {
				e.printf("dropped: %s\n", describeMessage(m))
			}
		}
	case "stabilize":
		e.stabilize()
	case "isolate":
		e.router.isolate(e.member(d, 0).id, e.peers)
	case "heal":
		e.router.heal()
	case "propose":
		e.propose(d)
	case "read-index":
		e.readIndex(e.member(d, 0))
	case "change-membership":
		e.changeMembership(d)
	case "outcome":
		e.outcome(d.CmdArgs[0].Key)
	case "reads":
		e.eachMember(func(m *member) string {
			if m.node.ReadRoundInFlight() {
				return "read round in flight"
			}
			return "no read round"
		})
	case "stop":
		m := e.member(d, 0)
		m.node.Stop()
		if err := m.engine.Close(); err != nil {
			t.Fatal(err)
		}
		m.stopped = true
	case "restart":
		m := e.member(d, 0)
		if !m.stopped {
			t.Fatalf("%s: member %d is running", d.Pos, m.id)
		}
		e.start(m.id)
		e.settle(e.members[m.id])
	case "status":
		e.status()
	case "kv":
		e.kv()
	default:
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	}
	if e.out.Len() == 0 {
		return "ok\n"
	}
	return e.out.String()
}

func (e *env) intArg(d *datadriven.TestData, i int) int {
	if len(d.CmdArgs) <= i {
		e.t.Fatalf("%s: %s needs an argument", d.Pos, d.Cmd)
	}
	n, err := strconv.Atoi(d.CmdArgs[i].Key)
	if err != nil {
		e.t.Fatalf("%s: %v", d.Pos, err)
	}
	return n
}

func (e *env) member(d *datadriven.TestData, i int) *member {
	m := e.members[uint64(e.intArg(d, i))]
	if m == nil {
		e.t.Fatalf("%s: no member %s", d.Pos, d.CmdArgs[i].Key)
	}
	return m
}

// ids returns the member ids named as bare arguments, or every member.
func (e *env) ids(d *datadriven.TestData) []uint64 {
	var ids []uint64
	for i, a := range d.CmdArgs {
		if len(a.Vals) == 0 {
			ids = append(ids, e.member(d, i).id)
		}
	}
	if len(ids) == 0 {
		return e.peers
	}
	return ids
}

func (e *env) addNodes(n int) {
	for i := 1; i <= n; i++ {
		e.peers = append(e.peers, uint64(i))
	}
	for _, id := range e.peers {
		e.start(id)
	}
	for _, id := range e.peers {
		e.settle(e.members[id])
	}
}

func (e *env) start(id uint64) {
	t := e.t
	eng, sm := openMember(t, e.dir, id)
	m := &member{id: id, sm: sm, engine: eng, ticks: make(chan time.Time)}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("SHARDKV_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := raftnode.Config{
		Group: testGroup, ID: id, Peers: e.peers,
		Engine: eng, Network: e.router, StateMachine: sm, Logger: logger,
		Ticks:          m.ticks,
		HeartbeatTicks: hbTicks,
		ElectionTicks:  electionTicks,
		// Ticks are injected; this only sets the read-index retry
		// timeout, which must never fire during a transcript.
		TickInterval: time.Hour,
	}
	raftnode.SetRaftNode(&cfg, func(c *raft.Config) raft.Node {
		m.raft = newManualRaft(c)
		return m.raft
	})
	n, err := raftnode.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.node = n
	e.members[id] = m
}

func (e *env) shutdown() {
	for _, id := range e.peers {
		if m := e.members[id]; m != nil && !m.stopped {
			m.node.Stop()
			_ = m.engine.Close()
			m.stopped = true
		}
	}
}

// await waits until cond holds on m's raft node.
func (e *env) await(m *member, what string, cond func() bool) {
	e.t.Helper()
	timeout := time.NewTimer(failsafe)
	defer timeout.Stop()
	for {
		ch, ok := m.raft.wait(cond)
		if ok {
			return
		}
		select {
		case <-ch:
		case <-m.node.Done():
			e.t.Fatalf("member %d stopped waiting for %s: %v", m.id, what, m.node.Err())
		case <-timeout.C:
			e.t.Fatalf("member %d: no %s within %v", m.id, what, failsafe)
		}
	}
}

// settle hands m's Readys to its Ready loop, one at a time, until raft has
// none: each is handled (persisted, sent, queued to apply) and advanced,
// and its committed entries applied, before the next.
func (e *env) settle(m *member) {
	e.t.Helper()
	for {
		rd, ok := m.raft.takeReady()
		if !ok {
			return
		}
		e.printf("> %d handling Ready\n", m.id)
		e.out.WriteString(indent(describeReady(rd)))
		select {
		case m.raft.readyc <- rd:
		case <-m.node.Done():
			e.t.Fatalf("member %d stopped: %v", m.id, m.node.Err())
		}
		e.await(m, "Advance", func() bool { return !m.raft.inFlight })
		if n := len(rd.CommittedEntries); n > 0 {
			select {
			case <-m.node.AppliedReaches(rd.CommittedEntries[n-1].GetIndex()):
			case <-m.node.Done():
				e.t.Fatalf("member %d stopped: %v", m.id, m.node.Err())
			case <-time.After(failsafe):
				e.t.Fatalf("member %d did not apply its committed entries", m.id)
			}
		}
		if e.router.snaps > 0 {
			e.t.Fatal("a member sent a snapshot: the harness does not route them")
		}
	}
}

func (e *env) tick(m *member, n int) {
	for range n {
		e.tickOnce(m)
	}
}

func (e *env) tickOnce(m *member) {
	e.t.Helper()
	var before int
	m.raft.do(func(*raft.RawNode) { before = m.raft.ticks })
	select {
	case m.ticks <- time.Time{}:
	case <-m.node.Done():
		e.t.Fatalf("member %d stopped", m.id)
	}
	e.await(m, "tick", func() bool { return m.raft.ticks > before })
	e.settle(m)
}

// tickElection ticks a follower until its election timeout (randomised by
// raft, so the count is not printed) runs out and it campaigns.
func (e *env) tickElection(m *member) {
	for range 2 * electionTicks {
		if m.raft.basic().RaftState != raft.StateFollower {
			return
		}
		e.tickOnce(m)
	}
	if st := m.raft.basic().RaftState; st == raft.StateFollower {
		e.t.Fatalf("member %d did not campaign within %d ticks", m.id, 2*electionTicks)
	}
}

// deliver steps every queued message for id that match accepts into it
// (those on a cut link, or to a stopped member, are lost), then lets it
// handle its Readys.
func (e *env) deliver(id uint64, match func(*raftpb.Message) bool) bool {
	msgs := e.router.takeIf(id, match)
	if len(msgs) == 0 {
		return false
	}
	e.printf("> %d receiving messages\n", id)
	for _, msg := range msgs {
		h := e.router.handler(msg.GetFrom(), id)
		if h == nil {
			e.printf("  %s (dropped)\n", describeMessage(msg))
			continue
		}
		e.printf("  %s\n", describeMessage(msg))
		if err := h.Step(context.Background(), msg); err != nil {
			e.printf("  step: %s\n", errName(err))
		}
	}
	if m := e.members[id]; !m.stopped {
		e.settle(m)
	}
	return true
}

func (e *env) stabilize() {
	for {
		any := false
		for _, id := range e.peers {
			if e.deliver(id, everyMessage) {
				any = true
			}
		}
		if !any {
			return
		}
	}
}

func (e *env) propose(d *datadriven.TestData) {
	m := e.member(d, 0)
	var key, value string
	cmdOp := byte('p')
	for _, a := range d.CmdArgs[1:] {
		switch {
		case a.Key == "append" && len(a.Vals) == 0:
			cmdOp = 'a'
		case len(a.Vals) == 1:
			key, value = a.Key, a.Vals[0]
		default:
			e.t.Fatalf("%s: propose ID KEY=VALUE [append]", d.Pos)
		}
	}
	e.nProps++
	o := &op{name: fmt.Sprintf("p%d", e.nProps), done: make(chan opResult, 1)}
	e.ops[o.name] = o
	ctx, cancel := context.WithTimeout(context.Background(), failsafe)
	p, err := m.node.Submit(ctx, encodeCmd(cmdOp, key, value))
	if err != nil {
		cancel()
		o.res = &opResult{err: err}
		e.printf("%s: refused by %d: %s\n", o.name, m.id, describeErr(err))
		return
	}
	go func() {
		defer cancel()
		v, err := p.Wait(ctx)
		o.done <- opResult{value: v, err: err}
	}()
	e.printf("%s: submitted to %d\n", o.name, m.id)
	e.settle(m)
}

// readIndex starts a ReadIndex on m and waits until its round has put
// the request to raft (or the read already failed).
func (e *env) readIndex(m *member) {
	e.nReads++
	o := &op{name: fmt.Sprintf("r%d", e.nReads), read: true, done: make(chan opResult, 1)}
	e.ops[o.name] = o
	e.launch(m, o, func() int { return m.raft.reads }, func(ctx context.Context) opResult {
		return opResult{err: m.node.ReadIndex(ctx)}
	})
	e.printf("%s: started on %d\n", o.name, m.id)
	e.settle(m)
}

// changeMembership starts a ChangeMembership on a member and waits until
// it is refused or its change reached raft.
func (e *env) changeMembership(d *datadriven.TestData) {
	m := e.member(d, 0)
	if len(d.CmdArgs) < 3 {
		e.t.Fatalf("%s: change-membership ID KIND MEMBER [addr=HOST:PORT]", d.Pos)
	}
	kinds := map[string]raftnode.ChangeKind{"add-learner": raftnode.AddLearner, "promote": raftnode.Promote, "remove": raftnode.Remove}
	change := raftnode.MemberChange{Kind: kinds[d.CmdArgs[1].Key], ID: uint64(e.intArg(d, 2))}
	if d.HasArg("addr") {
		d.ScanArgs(e.t, "addr", &change.Addr)
	}
	e.nChange++
	o := &op{name: fmt.Sprintf("c%d", e.nChange), done: make(chan opResult, 1)}
	e.ops[o.name] = o
	refused := e.launch(m, o, func() int { return m.raft.changes }, func(ctx context.Context) opResult {
		mem, err := m.node.ChangeMembership(ctx, change)
		return opResult{value: fmt.Sprintf("voters %v learners %v", mem.Voters, mem.Learners), err: err}
	})
	if refused {
		e.printf("%s: refused by %d: %s\n", o.name, m.id, describeErr(o.res.err))
		return
	}
	e.printf("%s: proposed to %d\n", o.name, m.id)
	e.settle(m)
}

// launch runs fn as the operation o on m and waits until its request
// reached raft (count, read under the raft's lock, went up) or fn
// returned first, which it reports (o.res is then set).
func (e *env) launch(m *member, o *op, count func() int, fn func(ctx context.Context) opResult) bool {
	var before int
	m.raft.do(func(*raft.RawNode) { before = count() })
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		defer cancel()
		o.done <- fn(ctx)
	}()
	timeout := time.NewTimer(failsafe)
	defer timeout.Stop()
	for {
		ch, ok := m.raft.wait(func() bool { return count() > before })
		if ok {
			return false
		}
		select {
		case <-ch:
		case r := <-o.done:
			o.res = &r
			return true
		case <-timeout.C:
			e.t.Fatalf("member %d: %s never reached raft", m.id, o.name)
		}
	}
}

func (e *env) outcome(name string) {
	o := e.ops[name]
	if o == nil {
		e.t.Fatalf("no operation %s", name)
	}
	if o.res == nil {
		select {
		case r := <-o.done:
			o.res = &r
		case <-time.After(failsafe):
			e.t.Fatalf("%s: no outcome within %v", name, failsafe)
		}
	}
	switch {
	case o.res.err != nil && o.read:
		e.printf("%s: %s\n", name, errName(o.res.err))
	case o.res.err != nil:
		e.printf("%s: %s\n", name, describeErr(o.res.err))
	case o.read:
		e.printf("%s: confirmed\n", name)
	default:
		e.printf("%s: applied, result %q\n", name, o.res.value)
	}
}

// eachMember prints a line for every member: "<id>: stopped", or
// "<id>: " and what line says of it.
func (e *env) eachMember(line func(m *member) string) {
	for _, id := range e.peers {
		m := e.members[id]
		if m.stopped {
			e.printf("%d: stopped\n", id)
			continue
		}
		e.printf("%d: %s\n", id, line(m))
	}
}

func (e *env) status() {
	e.eachMember(func(m *member) string {
		st := m.node.Status()
		return fmt.Sprintf("%s term=%d lead=%d commit=%d applied=%d",
			m.raft.basic().RaftState, st.Term, st.Leader, st.Commit, st.Applied)
	})
}

func (e *env) kv() {
	e.eachMember(func(m *member) string {
		return fmt.Sprintf("applied=%d %s", m.sm.Applied(), m.sm.dump(e.t))
	})
}

// dump lists the registers in key order.
func (s *registers) dump(t *testing.T) string {
	lo, hi := s.r.StateSpan(dataKey("")...)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var kvs []string
	for it.First(); it.Valid(); it.Next() {
		kvs = append(kvs, fmt.Sprintf("%s=%s", it.Key()[len(lo):], it.Value()))
	}
	if len(kvs) == 0 {
		return "(empty)"
	}
	return strings.Join(kvs, " ")
}

// describeErr names a proposal's or read's error by its sentinel (the
// texts may change; the classes are the contract) and says what it
// proves.
func describeErr(err error) string {
	class := "outcome unknown"
	if rpcerr.CertainlyNotApplied(err) {
		class = "certainly not applied"
	}
	return fmt.Sprintf("%s (%s)", errName(err), class)
}

// errNames are the errors transcripts show by name (an
// rpcerr.NotLeaderError with its leader, any other by its message). They
// are distinct sentinels, none wrapping another, so at most one matches and
// the map's order is moot.
var errNames = map[error]string{
	rpcerr.ErrStoppedInFlight: "ErrStoppedInFlight",
	rpcerr.ErrStopped:         "ErrStopped",
	rpcerr.ErrLeaderChanged:   "ErrLeaderChanged",
	rpcerr.ErrProposalDropped: "ErrProposalDropped",
	rpcerr.ErrReadTimeout:     "ErrReadTimeout",
	context.DeadlineExceeded:  "context.DeadlineExceeded",
}

func errName(err error) string {
	if nl := (*rpcerr.NotLeaderError)(nil); errors.As(err, &nl) {
		return fmt.Sprintf("NotLeaderError{Leader:%d}", nl.Leader)
	}
	for sentinel, name := range errNames {
		if errors.Is(err, sentinel) {
			return name
		}
	}
	return err.Error()
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
}

func describeReady(rd raft.Ready) string {
	var b strings.Builder
	if rd.SoftState != nil {
		fmt.Fprintln(&b, raft.DescribeSoftState(*rd.SoftState))
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		fmt.Fprintf(&b, "HardState %s\n", raft.DescribeHardState(rd.HardState))
	}
	if len(rd.ReadStates) > 0 {
		var rs []string
		for _, s := range rd.ReadStates {
			rs = append(rs, fmt.Sprintf("%s at index %d", formatReadCtx(s.RequestCtx), s.Index))
		}
		fmt.Fprintf(&b, "ReadStates: %s\n", strings.Join(rs, ", "))
	}
	if len(rd.Entries) > 0 {
		b.WriteString("Entries:\n")
		for _, ent := range rd.Entries {
			fmt.Fprintln(&b, raft.DescribeEntry(ent, formatEntry))
		}
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		fmt.Fprintf(&b, "Snapshot %s\n", raft.DescribeSnapshot(rd.Snapshot))
	}
	if len(rd.CommittedEntries) > 0 {
		b.WriteString("CommittedEntries:\n")
		for _, ent := range rd.CommittedEntries {
			fmt.Fprintln(&b, raft.DescribeEntry(ent, formatEntry))
		}
	}
	if len(rd.Messages) > 0 {
		b.WriteString("Messages:\n")
		for _, m := range rd.Messages {
			fmt.Fprintln(&b, describeMessage(m))
		}
	}
	return b.String()
}

func describeMessage(m *raftpb.Message) string {
	f := formatEntry
	if t := m.GetType(); t == raftpb.MessageType_MsgReadIndex || t == raftpb.MessageType_MsgReadIndexResp {
		f = formatReadCtx
	}
	return raft.DescribeMessage(m, f)
}

// formatEntry shows a proposal as its command, without the proposal id
// (random per member start).
func formatEntry(data []byte) string {
	if len(data) == 0 {
		return ""
	}
	_, k := binary.Uvarint(data)
	if k <= 0 {
		return fmt.Sprintf("%q", data)
	}
	op, key, value, err := decodeCmd(data[k:])
	if err != nil {
		return fmt.Sprintf("%q", data)
	}
	name := map[byte]string{'p': "put", 'a': "append"}[op]
	if name == "" {
		name = strconv.Quote(string(op))
	}
	return fmt.Sprintf("%s %s=%s", name, key, value)
}

// formatReadCtx shows a read-index request context by its round number
// (the last 8 of its 16 bytes; the first are random for each Start).
func formatReadCtx(data []byte) string {
	if len(data) != 16 {
		return fmt.Sprintf("%q", data)
	}
	return fmt.Sprintf("read#%d", binary.BigEndian.Uint64(data[8:]))
}
