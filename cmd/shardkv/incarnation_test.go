package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/memberclient"
	"github.com/shardkv/shardkv/internal/rpc"
)

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
	p := startNodeTest(t, 4)
	c, nodes, nodeAddr, members, join, startNode := p.c, p.nodes, p.addr, p.members, p.join, p.start
	for n := range 3 {
		startNode(n, "--replica", "1:"+members(1), "--replica", "2:"+members(2))
	}
	c.ok("admin", "join", join(1), join(2), "--timeout", "30s")
	const keys = 16
	writeKeys(c, keys)
	c.ok("admin", "leave", "2", "--timeout", "30s")
	waitSettled(t, c)

	startNode(3)
	nodes[3].waitOutput(t, "hosts no replica yet")
	c.ok("admin", "join", "--create", "2="+nodeAddr(3), "--timeout", "30s")
	waitSettled(t, c)
	var cfg struct {
		Num    uint64              `json:"num"`
		Shards []uint64            `json:"shards"`
		Groups map[string][]string `json:"groups"`
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
	status := func(n int) *kvpb.StatusReply {
		conn, err := grpc.NewClient(nodeAddr(n), rpc.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st, err := kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{Group: 2})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	newCopy := status(3)
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
	if _, errOut, code := c.run("", "admin", "member", "unhost", "1", nodeAddr(0), "--timeout", "30s"); code == 0 ||
		!strings.Contains(errOut, "is a member of group 1") {
		t.Fatalf("unhost of a member of group 1: exit %d: %s", code, errOut)
	}
	for n := range 3 {
		if out := c.ok("admin", "member", "unhost", "2", nodeAddr(n), "--timeout", "30s"); !strings.Contains(out, "hosts no replica of group 2") {
			t.Fatalf("unhost of the old copy on node %d: %s", n+1, out)
		}
	}
	c.ok("admin", "member", "unhost", "2", nodeAddr(0), "--timeout", "30s") // again: nothing to do
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
	for i := range 16 {
		if got := c.ok("get", fmt.Sprintf("key%d", i), "--timeout", "30s"); got != fmt.Sprintf("again%d\n", i) {
			t.Fatalf("key%d = %q", i, got)
		}
	}
}
