package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/internal/faultproxy"
	"github.com/shardkv/shardkv/internal/memberclient"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/transport"
)

// TestReplaceDeadNodeWithoutRestarts: two groups of three on three nodes;
// one node dies for good. An empty fourth node is started, and for each
// group `admin member add` names it: the running node hosts the new
// replica at once (memberpb.Node's Host), and `admin member replace`
// swaps it in. No process is restarted: every key reads back, and with a
// second old node killed the groups still have a quorum (the survivor and
// the new node). The new node restarted from its data directory alone
// hosts both replicas again. The node refuses, changing nothing, a
// replica its group never added, one whose address is not its own, the
// creation of a group that exists, and `admin member host` of a member
// that does not exist. The new node is reached through a proxy: it
// listens elsewhere and names the proxy's address as its own
// (--advertise-addr), which is what the members list.
func TestReplaceDeadNodeWithoutRestarts(t *testing.T) {
	const keys = 16
	p := startTwoGroups(t, 4, keys)
	c, nodes, nodeAddr := p.c, p.nodes, p.addr
	hidden := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1))
	proxy, err := faultproxy.Listen(nodeAddr(3), hidden, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	startNew := func() { p.start(3, "--listen", hidden, "--advertise-addr", nodeAddr(3)) }
	startNew() // the new machine: a node hosting nothing yet
	nodes[3].waitOutput(t, "hosts no replica yet")
	nodes[3].waitOutput(t, "address="+nodeAddr(3))

	// Refusals, each changing nothing.
	if _, errOut, code := c.run("", "admin", "member", "host", "1", "4"); code == 0 || !strings.Contains(errOut, "no member 4") {
		t.Fatalf("member host of a member never added: exit %d: %s", code, errOut)
	}
	pool := rpc.NewPool()
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	group1 := func(id uint64, at string) map[uint64]string {
		m := map[uint64]string{id: at}
		for rid := 1; rid <= 3; rid++ {
			m[uint64(rid)] = nodeAddr(rid - 1) // spread's group 1
		}
		return m
	}
	if _, err := memberclient.Host(ctx, pool, nodeAddr(3), &memberpb.HostRequest{Group: 1, Id: 7, Members: group1(7, nodeAddr(3))}, 30*time.Second); !errors.Is(err, memberpb.ErrNotAdded) {
		t.Fatalf("host a replica group 1 never added: %v, want ErrNotAdded", err)
	}
	if _, err := memberclient.Host(ctx, pool, nodeAddr(3), &memberpb.HostRequest{Group: 1, Id: 7, Members: group1(7, nodeAddr(2))}, 30*time.Second); !errors.Is(err, memberpb.ErrNotThisNode) {
		t.Fatalf("host a replica at another address: %v, want ErrNotThisNode", err)
	}
	create := &memberpb.HostRequest{Group: 1, Id: 7, Members: group1(7, nodeAddr(3)), Create: true}
	if _, err := memberclient.Host(ctx, pool, nodeAddr(3), create, 30*time.Second); !errors.Is(err, memberpb.ErrGroupExists) {
		t.Fatalf("create group 1 again: %v, want ErrGroupExists", err)
	}

	// Node 1 dies for good; node 4 takes its replicas, no restart.
	nodes[0].kill()
	c.ok("put", "during", "node 1 dead", "--timeout", "30s")
	// admin status shows each dead replica once, with its id (once each
	// group has a leader to tell it).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st := c.ok("admin", "status", "--timeout", "30s")
		var bad []string
		if !strings.Contains(st, "; 2 replicas unreachable)") {
			bad = append(bad, "not two replicas unreachable")
		}
		for _, line := range strings.Split(st, "\n") {
			if f := strings.Fields(line); len(f) > 4 && f[2] == nodeAddr(0) && (f[1] == "0" || f[3] != "unreachable" || f[4] == "-") {
				bad = append(bad, line)
			}
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin status with node 1 dead: %q\n%s", bad, st)
		}
	}
	for gid := 1; gid <= 2; gid++ {
		g := fmt.Sprint(gid)
		out := c.ok("admin", "member", "add", g, "4", nodeAddr(3), "--timeout", "30s")
		if !strings.Contains(out, "hosts it now") {
			t.Fatalf("member add %s 4 %s: the running node did not host it:\n%s", g, nodeAddr(3), out)
		}
		dead := strings.Split(memberList(t, c, g, "%[1]d@%[2]s", " "), " ")
		i := slices.IndexFunc(dead, func(m string) bool { return strings.HasSuffix(m, "@"+nodeAddr(0)) })
		replaceMember(t, c, g, strings.Split(dead[i], "@")[0], "4")
		waitConfigNames(t, c, g, nodeAddr(3))
	}
	if out := c.ok("admin", "member", "host", "2", "4"); !strings.Contains(out, "it hosts 1/4, 2/4") {
		t.Fatalf("member host of a hosted replica: %s", out)
	}
	// The added replicas took their groups' founding tokens (what their
	// raft messages carry, see transport.Founded): a founder's node and the
	// new node each answer with its own replica's.
	for g := uint64(1); g <= 2; g++ {
		founder, err := transport.AskMember(ctx, nodeAddr(2), g, 4)
		if err != nil {
			t.Fatal(err)
		}
		added, err := transport.AskMember(ctx, nodeAddr(3), g, 1)
		if err != nil {
			t.Fatal(err)
		}
		if founder.GetFoundingToken() == 0 || added.GetFoundingToken() != founder.GetFoundingToken() {
			t.Fatalf("group %d: the added replica's founding token is %x, a founder's %x", g, added.GetFoundingToken(), founder.GetFoundingToken())
		}
	}
	readAll := func() {
		t.Helper()
		readKeys(t, c, keys)
		if got := c.ok("get", "during", "--timeout", "30s"); got != "node 1 dead\n" {
			t.Fatalf("during = %q", got)
		}
	}
	for n := 1; n <= 3; n++ {
		if nodes[n].exited() {
			t.Fatalf("node %d exited: %v", n+1, nodes[n].err)
		}
	}
	// Node 2 dies too: each group's quorum is node 3 and the new node, a
	// voter now (raft keeps every committed entry on a quorum of it).
	nodes[1].kill()
	readAll()
	c.ok("put", "after", "two deaths", "--timeout", "30s")

	// The new node restarted from its data directory alone.
	nodes[3].stop(t)
	startNew()
	nodes[3].waitOutput(t, "group1/4 group2/4")
	readAll()
	if got := c.ok("get", "after", "--timeout", "30s"); got != "two deaths\n" {
		t.Fatalf("after = %q", got)
	}
}

// TestCreateGroupOnRunningNodes: three nodes host group 1; `admin join
// --create` makes each host a replica of a new group 2 (Node.Host with
// Create) and joins it, with no restart: shards move to it, every key
// reads back, and a node restarted from its data directory alone hosts
// both groups. Refused before anything is recorded: a group naming one
// node twice, a create while a founder's node is down, and a create of a
// group some node hosts founded with other members.
func TestCreateGroupOnRunningNodes(t *testing.T) {
	p := startNodeTest(t, 3)
	c, nodes, nodeAddr, members, join, startNode := p.c, p.nodes, p.addr, p.members, p.join, p.start
	for n := range 3 {
		startNode(n, "--replica", "1:"+members(1))
	}
	c.ok("admin", "join", join(1), "--timeout", "30s")
	const keys = 16
	writeKeys(c, keys)
	twice := fmt.Sprintf("2=%s,%s,%s", nodeAddr(0), nodeAddr(0), nodeAddr(1))
	if _, errOut, code := c.run("", "admin", "join", "--create", twice); code != 2 || !strings.Contains(errOut, "named twice") {
		t.Fatalf("join --create %s: exit %d: %s", twice, code, errOut)
	}
	// A founder's node down: refused before anything is recorded (a node
	// out of reach may host the group already).
	nodes[2].kill()
	if _, errOut, code := c.run("", "admin", "join", "--create", join(2), "--timeout", "30s"); code == 0 || !strings.Contains(errOut, "did not answer") {
		t.Fatalf("join --create with node 3 down: exit %d: %s", code, errOut)
	}
	pool := rpc.NewPool()
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for n := range 2 {
		if r, err := memberclient.Hosting(ctx, pool, nodeAddr(n), 2, 10*time.Second); err != nil || r.GetId() != 0 {
			t.Fatalf("node %d after the refused create: hosts %v, %v", n+1, r, err)
		}
	}
	startNode(2)
	// A node named by an address it does not listen at (a review's
	// trigger of a partial create): every node checks first, so the nodes
	// named before it record nothing either.
	alias := "localhost:" + strings.Split(nodeAddr(2), ":")[1]
	if _, errOut, code := c.run("", "admin", "join", "--create", fmt.Sprintf("2=%s,%s,%s", nodeAddr(1), nodeAddr(0), alias), "--timeout", "30s"); code == 0 ||
		!strings.Contains(errOut, "nothing recorded") {
		t.Fatalf("join --create naming node 3 as %s: exit %d: %s", alias, code, errOut)
	}
	for n := range 3 {
		if r, err := memberclient.Hosting(ctx, pool, nodeAddr(n), 2, 10*time.Second); err != nil || r.GetId() != 0 {
			t.Fatalf("node %d after the refused create: hosts %v, %v", n+1, r, err)
		}
	}
	c.ok("admin", "join", "--create", join(2), "--timeout", "30s")
	for n := range 3 {
		nodes[n].waitOutput(t, "hosting a new replica")
	}
	waitSettled(t, c)
	if got := len(configReplicas(t, c)["2"]); got != 3 {
		t.Fatalf("group 2 in the configuration: %d replicas", got)
	}
	readKeys(t, c, keys)
	for n := range 3 {
		if nodes[n].exited() {
			t.Fatalf("node %d exited: %v", n+1, nodes[n].err)
		}
	}
	nodes[0].stop(t)
	startNode(0)
	nodes[0].waitOutput(t, "group1/1 group2/3")
	nodes[1].kill() // each group: nodes 1 and 3 are a quorum
	readKeys(t, c, keys)
	c.ok("put", "after", "create", "--timeout", "30s")

	// A create that reached one node, retried with other founders (a
	// review's finding: the retry made a second copy of the group, which
	// lost acknowledged writes): refused by the node that hosts it and by
	// every other node, which asks it first.
	startNode(1)
	founders := map[uint64]string{1: nodeAddr(0), 2: nodeAddr(1), 3: nodeAddr(2)}
	if _, err := memberclient.Host(ctx, pool, nodeAddr(0), &memberpb.HostRequest{Group: 3, Id: 1, Members: founders, Create: true}, 30*time.Second); err != nil {
		t.Fatalf("create group 3 on node 1: %v", err)
	}
	other := map[uint64]string{1: nodeAddr(0), 2: nodeAddr(1), 3: nodeAddr(9)} // no node there
	for _, at := range []struct {
		id   uint64
		node int
	}{{1, 0}, {2, 1}} {
		req := &memberpb.HostRequest{Group: 3, Id: at.id, Members: other, Create: true}
		if _, err := memberclient.Host(ctx, pool, nodeAddr(at.node), req, 30*time.Second); !errors.Is(err, memberpb.ErrGroupExists) {
			t.Fatalf("create group 3 with other founders on node %d: %v, want ErrGroupExists", at.node+1, err)
		}
	}
	// The same create again is answered as done, and another node joins it.
	if _, err := memberclient.Host(ctx, pool, nodeAddr(1), &memberpb.HostRequest{Group: 3, Id: 2, Members: founders, Create: true}, 30*time.Second); err != nil {
		t.Fatalf("the same create of group 3 on node 2: %v", err)
	}
}

// TestSecondCopyOfAGroupID: group 2 leaves and keeps running on its
// three nodes (a group that left is not stopped); its id is then given to
// a new group created on a fourth node. Before group incarnations the old
// copy took the configuration that gives shards to group 2 as its own and
// pulled them too, and a review lost acknowledged writes so. Now the join
// records the new copy's incarnation, and the old copy installs that
// configuration as if group 2 were not in it: it holds no shard, every key
// written before and after reads back, and the old copy answers writes
// for group 2's shards as WRONG_GROUP. docs/design.md, Nodes: "Two copies
// of one group id".
func TestSecondCopyOfAGroupID(t *testing.T) {
	const keys = 16
	p := startTwoGroups(t, 4, keys)
	c, nodes, nodeAddr, startNode := p.c, p.nodes, p.addr, p.start
	c.ok("admin", "leave", "2", "--timeout", "30s")
	waitSettled(t, c)

	startNode(3)
	nodes[3].waitOutput(t, "hosts no replica yet")
	c.ok("admin", "join", "--create", "2="+nodeAddr(3), "--timeout", "30s")
	waitSettled(t, c)
	var cfg struct {
		Num          uint64              `json:"num"`
		Shards       []uint64            `json:"shards"`
		Groups       map[string][]string `json:"groups"`
		Incarnations map[string]string   `json:"incarnations"`
	}
	if err := json.Unmarshal([]byte(c.ok("admin", "config", "-o", "json")), &cfg); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Groups["2"]; len(got) != 1 || got[0] != nodeAddr(3) {
		t.Fatalf("group 2 in configuration %d: %v", cfg.Num, got)
	}
	readKeys(t, c, keys)
	for i := range keys {
		c.ok("put", fmt.Sprintf("key%d", i), fmt.Sprintf("again%d", i), "--timeout", "30s")
	}

	// The old copy: at the latest configuration, holding nothing, with
	// another incarnation than the new copy's.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	status := func(n int) *kvpb.StatusReply { return groupStatus(ctx, t, nodeAddr(n), 2) }
	newCopy := status(3)
	if want := fmt.Sprintf("%016x", newCopy.GetIncarnation()); cfg.Incarnations["2"] != want {
		t.Fatalf("configuration %d records group 2 as incarnation %q, the new copy states %s", cfg.Num, cfg.Incarnations["2"], want)
	}
	for {
		st := status(0)
		if st.GetIncarnation() == 0 || st.GetIncarnation() == newCopy.GetIncarnation() {
			t.Fatalf("old copy's incarnation %x, new copy's %x", st.GetIncarnation(), newCopy.GetIncarnation())
		}
		if len(st.GetShards()) > 0 {
			t.Fatalf("the old copy of group 2 holds shards at configuration %d: %v", st.GetConfigNum(), st.GetShards())
		}
		if st.GetConfigNum() == cfg.Num {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	conn, err := grpc.NewClient(nodeAddr(0), rpc.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range keys {
		key := fmt.Sprintf("key%d", i)
		if cfg.Shards[config.ShardOf([]byte(key), len(cfg.Shards))] != 2 {
			continue
		}
		_, err := kvpb.NewKVClient(conn).Get(ctx, &kvpb.GetRequest{Group: 2, Key: []byte(key)})
		if !errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrWrongGroup) {
			t.Fatalf("the old copy answered a read of %s: %v", key, err)
		}
	}
	for i := range keys {
		if got := c.ok("get", fmt.Sprintf("key%d", i), "--timeout", "30s"); got != fmt.Sprintf("again%d\n", i) {
			t.Fatalf("key%d = %q", i, got)
		}
	}
	unhostOldCopy(t, p)
}

// unhostOldCopy goes on from TestSecondCopyOfAGroupID: the old copy of
// group 2 is unhosted from its three nodes (memberpb.Node's Unhost), which
// keep group 1 and forget group 2 across a restart, even one with the
// --replica flags that first named it; a member of group 1 is refused
// until it is removed from its group, and then dropped. Every key still
// reads back.
func unhostOldCopy(t *testing.T, p *nodeTest) {
	c, nodeAddr := p.c, p.addr
	pool := rpc.NewPool()
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hosting := func(n int, gid uint64) uint64 {
		r, err := memberclient.Hosting(ctx, pool, nodeAddr(n), gid, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return r.GetId()
	}
	dropped := hosting(0, 2)
	if _, errOut, code := c.run("", "admin", "member", "unhost", "1", nodeAddr(0), "--timeout", "30s"); code == 0 ||
		!strings.Contains(errOut, "is a member of group 1") {
		t.Fatalf("unhost of a member of group 1: exit %d: %s", code, errOut)
	}
	for n := range 3 {
		if out := c.ok("admin", "member", "unhost", "2", nodeAddr(n), "--timeout", "30s"); !strings.Contains(out, "dropped replica") {
			t.Fatalf("unhost of the old copy on node %d: %s", n+1, out)
		}
	}
	if out := c.ok("admin", "member", "unhost", "2", nodeAddr(0), "--timeout", "30s"); !strings.Contains(out, "nothing dropped") { // again
		t.Fatalf("unhost again: %s", out)
	}
	for _, bad := range []string{"31111", p.ctls} { // not host:port; not a node
		if _, errOut, code := c.run("", "admin", "member", "unhost", "2", strings.Split(bad, ",")[0], "--timeout", "30s"); code != 2 {
			t.Fatalf("unhost at %s: exit %d (want 2, a usage error): %s", bad, code, errOut)
		}
	}
	// The dropped replica's group and id are not hosted on the node
	// again: its old copy may still address them there. Another id is
	// another question (here: the configuration has group 2).
	for id, want := range map[uint64]error{dropped: memberpb.ErrDroppedHere, dropped%3 + 1: memberpb.ErrGroupExists} {
		members := map[uint64]string{id: nodeAddr(0), id%3 + 1: nodeAddr(1), (id+1)%3 + 1: nodeAddr(2)}
		_, err := memberclient.Host(ctx, pool, nodeAddr(0), &memberpb.HostRequest{Group: 2, Id: id, Members: members, Create: true, Check: true}, 10*time.Second)
		if !errors.Is(err, want) {
			t.Fatalf("create of group 2 with replica %d on node 1, which dropped replica %d: %v, want %v", id, dropped, err, want)
		}
	}
	// Restarted with the flags it was first started with, which still
	// name group 2's replica: it is not founded again.
	p.nodes[0].stop(t)
	p.start(0, "--replica", "1:"+p.members(1), "--replica", "2:"+p.members(2))
	p.nodes[0].waitOutput(t, "it was unhosted from this node")
	for n := range 3 {
		if hosting(n, 2) != 0 || hosting(n, 1) == 0 {
			t.Fatalf("node %d hosts group 1's %d and group 2's %d", n+1, hosting(n, 1), hosting(n, 2))
		}
	}

	// A member of a group in the configuration: refused until removed.
	c.ok("admin", "member", "add", "1", "4", nodeAddr(3), "--timeout", "30s")
	if _, errOut, code := c.run("", "admin", "member", "unhost", "1", nodeAddr(3), "--timeout", "30s"); code == 0 ||
		!strings.Contains(errOut, "still a member") {
		t.Fatalf("unhost of learner 4 of group 1: exit %d: %s", code, errOut)
	}
	c.ok("admin", "member", "remove", "1", "4", "--timeout", "30s")
	c.ok("admin", "member", "unhost", "1", nodeAddr(3), "--timeout", "30s")
	if hosting(3, 1) != 0 || hosting(3, 2) == 0 {
		t.Fatalf("node 4 hosts group 1's %d and group 2's %d", hosting(3, 1), hosting(3, 2))
	}
	if p.nodes[3].exited() {
		t.Fatalf("node 4 exited: %v", p.nodes[3].err)
	}

	// An orphan founder: a create that reached one node of three and was
	// abandoned. Its group has no leader and never joined; it goes.
	orphan := map[uint64]string{1: nodeAddr(1), 2: nodeAddr(2), 3: nodeAddr(0)}
	if _, err := memberclient.Host(ctx, pool, nodeAddr(1), &memberpb.HostRequest{Group: 7, Id: 1, Members: orphan, Create: true}, 30*time.Second); err != nil {
		t.Fatalf("create group 7 on node 2 only: %v", err)
	}
	if out := c.ok("admin", "member", "unhost", "7", nodeAddr(1), "--timeout", "30s"); !strings.Contains(out, "dropped replica 1 of group 7") {
		t.Fatalf("unhost of an orphan founder: %s", out)
	}
	for i := range 16 {
		if got := c.ok("get", fmt.Sprintf("key%d", i), "--timeout", "30s"); got != fmt.Sprintf("again%d\n", i) {
			t.Fatalf("key%d = %q", i, got)
		}
	}
}

// TestWipedNodeTakesNoMessagesOfAnOldCopy: group 2 founded on nodes 1, 2
// and 3 leaves and keeps running there (the old copy); node 1's data is
// wiped, so no tombstone says it dropped replica 1 of group 2, and a new
// group 2 is created with replica 1 on node 1 again. The old copy still
// lists member 1 at node 1 and heartbeats it: raft messages are addressed
// by group and id alone, so before founding tokens the new copy's replica
// would take the old copy's terms and entries for its own (a run without
// the fix: it followed the old copy's leader, in the new copy's term).
// Now node 1 drops them, says so, and its replica stays the new copy's:
// its incarnation, term and leader are the new copy's, and with another
// of the new copy's nodes dead every key is written and reads back.
func TestWipedNodeTakesNoMessagesOfAnOldCopy(t *testing.T) {
	const keys = 16
	p := startNodeTest(t, 5)
	c, nodes, nodeAddr := p.c, p.nodes, p.addr
	for n := range 5 {
		p.start(n)
	}
	c.ok("admin", "join", "--create", "1="+nodeAddr(4), "--timeout", "30s")
	c.ok("admin", "join", "--create", fmt.Sprintf("2=%s,%s,%s", nodeAddr(0), nodeAddr(1), nodeAddr(2)), "--timeout", "30s")
	writeKeys(c, keys)
	c.ok("admin", "leave", "2", "--timeout", "30s")
	waitSettled(t, c)

	nodes[0].kill()
	if err := os.RemoveAll(filepath.Join(p.dir, "n1")); err != nil {
		t.Fatal(err)
	}
	p.start(0)
	// The old copy is idle and quiesced: restarted, its replicas elect a
	// leader, which heartbeats every member, node 1's included.
	for n := 1; n <= 2; n++ {
		nodes[n].kill()
		p.start(n)
	}
	c.ok("admin", "join", "--create", fmt.Sprintf("2=%s,%s,%s", nodeAddr(0), nodeAddr(3), nodeAddr(4)), "--timeout", "30s")
	waitSettled(t, c)
	nodes[0].waitOutput(t, "dropped raft messages from another copy")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	status := func(n int) *kvpb.StatusReply { return groupStatus(ctx, t, nodeAddr(n), 2) }
	oldCopy := status(1)
	for i := 0; ; i++ {
		wiped, newCopy := status(0), status(3)
		if wiped.GetIncarnation() == oldCopy.GetIncarnation() || newCopy.GetIncarnation() == oldCopy.GetIncarnation() {
			t.Fatalf("a replica of the new copy states the old copy's incarnation %x", oldCopy.GetIncarnation())
		}
		if wiped.GetIncarnation() == newCopy.GetIncarnation() && wiped.GetTerm() == newCopy.GetTerm() && wiped.GetLeader() == newCopy.GetLeader() {
			break
		}
		if i == 50 {
			t.Fatalf("node 1's replica of group 2: incarnation %x, term %d, leader %d; the new copy's on node 4: %x, %d, %d (the old copy: %x, %d)",
				wiped.GetIncarnation(), wiped.GetTerm(), wiped.GetLeader(), newCopy.GetIncarnation(), newCopy.GetTerm(), newCopy.GetLeader(),
				oldCopy.GetIncarnation(), oldCopy.GetTerm())
		}
		time.Sleep(100 * time.Millisecond)
	}
	readKeys(t, c, keys)
	// The new copy's quorum now needs the wiped node's replica: node 4
	// dies, and group 2's writes commit on nodes 1 and 5.
	nodes[3].kill()
	for i := range keys {
		c.ok("put", fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i), "--timeout", "30s")
	}
	readKeys(t, c, keys)
}

// groupStatus is the Status of the replica of group gid the node at addr
// hosts.
func groupStatus(ctx context.Context, t *testing.T, addr string, gid uint64) *kvpb.StatusReply {
	t.Helper()
	conn, err := grpc.NewClient(addr, rpc.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{Group: gid})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestCreateFinishedByFlags: `admin join --create` recorded group 1's
// founders on two nodes, and the third, down before its turn, is started
// with --replica flags naming the same members (a create finished by
// hand). Founders started one way hold another founding token than
// founders started the other way (a review found the group split so:
// each side dropped the other's messages), so the flag start is refused,
// recording nothing and saying to run the create again; the create
// retried hosts it, every founder states one token, and the group serves
// with its first node dead.
func TestCreateFinishedByFlags(t *testing.T) {
	p := startNodeTest(t, 3)
	c, nodes, nodeAddr := p.c, p.nodes, p.addr
	for n := range 3 {
		p.start(n)
	}
	members := map[uint64]string{1: nodeAddr(0), 2: nodeAddr(1), 3: nodeAddr(2)}
	pool := rpc.NewPool()
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	create := func(n int) {
		t.Helper()
		req := &memberpb.HostRequest{Group: 1, Id: uint64(n + 1), Members: members, Create: true}
		if _, err := memberclient.Host(ctx, pool, nodeAddr(n), req, 30*time.Second); err != nil {
			t.Fatalf("host replica %d: %v", n+1, err)
		}
	}
	create(0)
	create(1)
	nodes[2].kill()
	flags := startProcess(t, p.bin, filepath.Join(p.dir, "n3-flags.log"), "server", "--listen", nodeAddr(2),
		"--data", filepath.Join(p.dir, "n3"), "--controllers", p.ctls,
		"--replica", fmt.Sprintf("1:1=%s,2=%s,3=%s", nodeAddr(0), nodeAddr(1), nodeAddr(2)))
	flags.waitOutput(t, "run the same admin join --create again")
	flags.waitRefused(t)
	p.start(2)
	nodes[2].waitOutput(t, "hosts no replica yet") // the refused start recorded nothing
	create(2)
	var tokens []uint64
	for n, other := range []uint64{2, 3, 1} {
		reply, err := transport.AskMember(ctx, nodeAddr(n), 1, other)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, reply.GetFoundingToken())
	}
	if tokens[0] == 0 || tokens[1] != tokens[0] || tokens[2] != tokens[0] {
		t.Fatalf("founding tokens of group 1's replicas 1, 2, 3: %x", tokens)
	}
	c.ok("admin", "join", "1="+strings.Join([]string{nodeAddr(0), nodeAddr(1), nodeAddr(2)}, ","), "--timeout", "30s")
	nodes[0].kill()
	const keys = 8
	writeKeys(c, keys)
	readKeys(t, c, keys)
}

// TestLostFounderIsNotFoundedAgain: a founder of group 1 (founded by
// --replica flags) loses its data, its node wiped, and the group elects a
// new leader, which knows nothing of the lost replica's acknowledgements.
// Starting it again with the same flags is refused, recording nothing:
// its peers heard from it before, so it ran (on empty data it could vote
// twice in a term or complete a quorum without the entries it
// acknowledged). Replacing it is the way back.
func TestLostFounderIsNotFoundedAgain(t *testing.T) {
	p := startNodeTest(t, 3)
	c, nodes := p.c, p.nodes
	flags := []string{"--replica", "1:" + p.members(1)}
	for n := range 3 {
		p.start(n, flags...)
	}
	c.ok("admin", "join", p.join(1), "--timeout", "30s")
	const keys = 8
	writeKeys(c, keys)
	nodes[2].kill()
	if err := os.RemoveAll(filepath.Join(p.dir, "n3")); err != nil {
		t.Fatal(err)
	}
	// A new leader: the survivors restart and elect one.
	for n := range 2 {
		nodes[n].kill()
	}
	for n := range 2 {
		p.start(n, flags...)
	}
	readKeys(t, c, keys)
	again := startProcess(t, p.bin, filepath.Join(p.dir, "n3-again.log"), append([]string{"server", "--listen", p.addr(2),
		"--data", filepath.Join(p.dir, "n3"), "--controllers", p.ctls}, flags...)...)
	again.waitOutput(t, "heard from this replica before")
	again.waitRefused(t)
	p.start(2)
	nodes[2].waitOutput(t, "hosts no replica yet") // the refused start recorded nothing
}
