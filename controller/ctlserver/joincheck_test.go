package ctlserver_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/controller/ctlserver"
	"github.com/shardkv/shardkv/internal/grpctest"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/transport"
)

// fakeReplica serves Identify as replica id of group gid of cluster
// clusterID, as a replica group server does, on addr ("" for a new port).
// Every fake replica of one group id states the same incarnation,
// incarnationOf(gid).
func fakeReplica(t *testing.T, addr string, clusterID, gid, id uint64) string {
	t.Helper()
	return fakeNode(t, addr, clusterID, map[uint64]transport.Hosted{gid: {Replica: id, Incarnation: incarnationOf(gid)}})
}

func incarnationOf(gid uint64) uint64 { return 0x1c0000 + gid }

// fakeNode serves Identify as a node hosting the replicas hosted (by group)
// of cluster clusterID, on addr ("" for a new port).
func fakeNode(t *testing.T, addr string, clusterID uint64, hosted map[uint64]transport.Hosted) string {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return grpctest.ServeAt(t, addr, func(g *grpc.Server) {
		transport.RegisterIdentity(g, func() map[uint64]transport.Hosted { return hosted })
	}, rpc.ServerOptions(rpc.CheckClusterID(clusterID, testLogger())...)...)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestJoinIsChecked: before a join creates a configuration, the leader
// checks every replica of the groups it adds, and refuses with an error
// that names the bad replica and why (issue 14: `admin join 4=127.0.0.1`
// used to give group 4 a quarter of the shards, stranded for good).
func TestJoinIsChecked(t *testing.T) {
	const cid = 0x5eed
	c := newClusterWith(t, 16, cid)
	cl := c.client()
	cx := ctx(t)
	g1 := fakeReplica(t, "", cid, 1, 1)
	if _, err := cl.Join(cx, map[uint64][]string{1: {g1}}); err != nil {
		t.Fatal(err)
	}
	g4 := []string{fakeReplica(t, "", cid, 4, 1), fakeReplica(t, "", cid, 4, 2), fakeReplica(t, "", cid, 4, 3)}
	other := fakeReplica(t, "", cid+1, 4, 1)
	dead := freeAddr(t)
	node := fakeNode(t, "", cid, map[uint64]transport.Hosted{1: {Replica: 2}, 2: {Replica: 1}})
	before, _, err := cl.Query(cx, -1)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		addrs []string
		want  error
		says  []string
	}{
		{"the issue's typo: no port", []string{"127.0.0.1"}, controllerpb.ErrBadReplica, []string{`"127.0.0.1" is not host:port`, "missing port"}},
		{"port out of range", []string{g4[0], "127.0.0.1:70000"}, controllerpb.ErrBadReplica, []string{"127.0.0.1:70000", "1 to 65535"}},
		{"nothing listening", []string{g4[0], g4[1], dead}, controllerpb.ErrReplicaUnreachable, []string{"group 4: replica " + dead + " did not answer"}},
		{"another group's replica", []string{g4[0], g1}, controllerpb.ErrBadReplica, []string{g1 + " is replica 1 of group 1, not of group 4"}},
		{"a node hosting other groups", []string{g4[0], node}, controllerpb.ErrBadReplica, []string{node + " hosts no replica of group 4"}},
		{"another cluster", []string{other}, controllerpb.ErrBadReplica, []string{other + " belongs to another cluster"}},
		{"a controller", []string{c.addrs[0]}, controllerpb.ErrBadReplica, []string{c.addrs[0] + " serves no replica group"}},
		{"one replica twice", []string{g4[0], g4[1], g4[0]}, controllerpb.ErrBadReplica, []string{"are the same replica"}},
	} {
		start := time.Now()
		_, err := cl.Join(cx, map[uint64][]string{4: tc.addrs})
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		for _, s := range tc.says {
			if !strings.Contains(err.Error(), s) {
				t.Fatalf("%s: %q does not say %q", tc.name, err, s)
			}
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("%s: refused after %v", tc.name, took)
		}
		t.Logf("%s: %v", tc.name, err)
		after, _, err := cl.Query(cx, -1)
		if err != nil {
			t.Fatal(err)
		}
		if after.Num != before.Num {
			t.Fatalf("%s created configuration %d", tc.name, after.Num)
		}
	}

	// Groups already joined are not checked again: a join that repeats
	// them changes nothing, whether they answer or not.
	cfg, err := cl.Join(cx, map[uint64][]string{1: {g1}, 4: g4})
	if err != nil || cfg.Num != before.Num+1 || len(cfg.Groups[4]) != 3 {
		t.Fatalf("join of a good group: %v, %v", cfg, err)
	}
	if again, err := cl.Join(cx, map[uint64][]string{4: g4}); err != nil || again.Num != cfg.Num {
		t.Fatalf("repeated join: %v, %v", again, err)
	}
}

// TestJoinVerdictIsInTheLog: the check's verdict is proposed with the
// join, so the request's session remembers it: a retry of the same request
// gets the same answer even once the replica runs, and only followers
// refuse to check (the client moves on to the leader).
func TestJoinVerdictIsInTheLog(t *testing.T) {
	const cid = 0x5eed
	c := newClusterWith(t, 8, cid)
	cx := ctx(t)
	if _, _, err := c.client().Query(cx, -1); err != nil { // initialised
		t.Fatal(err)
	}
	lead := c.leader()
	conn := c.conn
	leader := conn(lead)
	if _, err := leader.OpenSession(cx, &controllerpb.OpenSessionRequest{ClientId: 77}); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	join := func(cl controllerpb.ControllerClient, seq uint64) (*controllerpb.ChangeReply, error) {
		rctx, cancel := context.WithTimeout(cx, 2*time.Second)
		defer cancel()
		r, err := cl.Join(rctx, &controllerpb.JoinRequest{Groups: []*controllerpb.Group{{Id: 5, Addrs: []string{addr}}},
			Session: &controllerpb.Session{ClientId: 77, Seq: seq}})
		return r, controllerpb.Errors.FromStatus(err)
	}
	for id := uint64(1); id <= 3; id++ {
		if id != lead {
			if _, err := join(conn(id), 1); !errors.Is(err, rpcerr.ErrNotLeader) {
				t.Fatalf("a follower answered a join: %v", err)
			}
		}
	}
	if _, err := join(leader, 1); !errors.Is(err, controllerpb.ErrReplicaUnreachable) {
		t.Fatalf("join of a replica not running: %v", err)
	}
	fakeReplica(t, addr, cid, 5, 1)
	if _, err := join(leader, 1); !errors.Is(err, controllerpb.ErrReplicaUnreachable) {
		t.Fatalf("retry of the refused request: %v (want the remembered refusal)", err)
	}
	r, err := join(leader, 2)
	if err != nil || len(r.GetConfig().GetGroups()) != 1 {
		t.Fatalf("a new request once the replica runs: %v, %v", r, err)
	}
}

// TestJoinRecordsIncarnation: a join records each new group's incarnation
// as its replicas state it, and refuses two copies of one group id (a
// group that left, created again elsewhere, and joined with replicas of
// both copies), and a group none of whose replicas states one yet (no
// leader elected since it was founded: retry). New addresses of a joined
// group must not be another copy's. docs/design.md, Nodes: "Two copies of
// one group id".
func TestJoinRecordsIncarnation(t *testing.T) {
	const cid = 0x5eed
	c := newClusterWith(t, 8, cid)
	cl := c.client()
	cx := ctx(t)
	g1 := []string{fakeReplica(t, "", cid, 1, 1), fakeReplica(t, "", cid, 1, 2)}
	copy1 := fakeNode(t, "", cid, map[uint64]transport.Hosted{1: {Replica: 3, Incarnation: 0xbad}})
	fresh := fakeNode(t, "", cid, map[uint64]transport.Hosted{2: {Replica: 1}})
	before, _, err := cl.Query(cx, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Join(cx, map[uint64][]string{1: append(g1, copy1)}); !errors.Is(err, controllerpb.ErrBadReplica) ||
		!strings.Contains(err.Error(), "two copies of the group id") || !strings.Contains(err.Error(), copy1+" state incarnation 0000000000000bad") {
		t.Fatalf("join naming replicas of two copies: %v", err)
	}
	// The leader's refusal itself, asked once: the client sends such a
	// join again until its deadline, and then answers the refusal, or an
	// unknown outcome if the deadline fell during an attempt (on a loaded
	// machine, an attempt's check of the replicas takes seconds).
	for client := uint64(78); ; client++ { // a new session at each try
		lead := c.conn(c.leader())
		if _, err = lead.OpenSession(cx, &controllerpb.OpenSessionRequest{ClientId: client}); err == nil {
			_, err = lead.Join(cx, &controllerpb.JoinRequest{Groups: []*controllerpb.Group{{Id: 2, Addrs: []string{fresh}}},
				Session: &controllerpb.Session{ClientId: client, Seq: 1}})
		}
		// A leader change shows as NOT_LEADER, or as a proposal (the
		// session, the refusal) dropped or of unknown outcome: ask again.
		if err = controllerpb.Errors.FromStatus(err); errors.Is(err, controllerpb.ErrGroupNotReady) || cx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !errors.Is(err, controllerpb.ErrGroupNotReady) ||
		!strings.Contains(err.Error(), fresh+" state no incarnation yet") {
		t.Fatalf("join of a group without an incarnation: %v", err)
	}
	short, cancel := context.WithTimeout(cx, 3*time.Second)
	defer cancel()
	if _, err := cl.Join(short, map[uint64][]string{2: {fresh}}); !errors.Is(err, controllerpb.ErrGroupNotReady) &&
		!errors.Is(err, ctlclient.ErrUnknownOutcome) {
		t.Fatalf("the client's join of a group without an incarnation, until its deadline: %v", err)
	}
	if after, _, err := cl.Query(cx, -1); err != nil || after.Num != before.Num {
		t.Fatalf("a refused join made configuration %d (%v)", after.Num, err)
	}

	cfg, err := cl.Join(cx, map[uint64][]string{1: g1})
	if err != nil || cfg.Incarnations[1] != incarnationOf(1) {
		t.Fatalf("join: %+v, %v; want incarnation %x recorded", cfg, err, incarnationOf(1))
	}
	// Replica addresses change; the incarnation stays, and a new
	// address must not be another copy's (one catching up states none).
	if _, err := cl.SetReplicas(cx, 1, []string{g1[0], copy1}, 0); !errors.Is(err, controllerpb.ErrBadReplica) {
		t.Fatalf("set replicas to another copy: %v", err)
	}
	catchingUp := fakeNode(t, "", cid, map[uint64]transport.Hosted{1: {Replica: 4}})
	cfg, err = cl.SetReplicas(cx, 1, []string{g1[0], g1[1], catchingUp}, incarnationOf(1))
	if err != nil || cfg.Incarnations[1] != incarnationOf(1) || len(cfg.Groups[1]) != 3 {
		t.Fatalf("set replicas: %+v, %v", cfg, err)
	}

	// The id leaves; joined again with another copy, the new
	// incarnation is recorded.
	g2 := fakeReplica(t, "", cid, 2, 1)
	if _, err := cl.Join(cx, map[uint64][]string{2: {g2}}); err != nil {
		t.Fatal(err)
	}
	if cfg, err = cl.Leave(cx, []uint64{1}, false); err != nil || cfg.Incarnations[1] != 0 {
		t.Fatalf("leave: %+v, %v", cfg, err)
	}
	if cfg, err = cl.Join(cx, map[uint64][]string{1: {copy1}}); err != nil || cfg.Incarnations[1] != 0xbad {
		t.Fatalf("join of the other copy after the leave: %+v, %v", cfg, err)
	}
}

// TestCheckedJoinRecordsOnlyStatedIncarnations: the join a leader proposes
// carries, for each group, the incarnation its replicas stated at the
// check and nothing else. A request naming one for a group the check did
// not see (in the configuration then: it may leave before the join
// applies, which then refuses it as unchecked) must not have it recorded.
func TestCheckedJoinRecordsOnlyStatedIncarnations(t *testing.T) {
	req := &controllerpb.JoinRequest{Groups: []*controllerpb.Group{
		{Id: 1, Addrs: []string{"a:1"}, Incarnation: 0x11},
		{Id: 2, Addrs: []string{"b:1"}, Incarnation: 0x22},
	}}
	join := ctlserver.CheckedJoin(req, map[uint64]uint64{1: 0x1})
	if got := []uint64{join.GetGroups()[0].GetIncarnation(), join.GetGroups()[1].GetIncarnation()}; got[0] != 0x1 || got[1] != 0 {
		t.Fatalf("proposed incarnations %x, want [1 0]: the stated one for the checked group, none for the other", got)
	}
	if req.GetGroups()[0].GetIncarnation() != 0x11 {
		t.Fatal("the caller's request was changed")
	}
}
