package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/internal/rpc"
)

func TestJoinLeave(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3})
	h.join(1)
	cl := h.client()
	ks := keys(20)
	want := map[string]string{}
	for _, k := range ks {
		h.put(cl, k, k+"|")
		want[k] = k + "|"
	}
	step := func(label string) {
		t.Helper()
		for _, k := range ks {
			h.check(cl, k, want[k])
			h.appendTo(cl, k, label)
			want[k] += label
		}
	}
	h.join(2)
	step("a")
	h.join(3)
	step("b")
	h.leave(1)
	step("c")
	h.leave(2)
	step("d")
	// Once the handoff is complete, the groups that left can be shut down:
	// everything lives on group 3.
	h.waitSettled()
	h.c.StopGroup(1)
	h.c.StopGroup(2)
	for _, k := range ks {
		h.check(cl, k, want[k])
	}
}

// TestNotLeaderNamesTheLeader: a replica that only the leader may answer
// refuses with the leader's id and address in the status details, so a
// client goes there without probing.
func TestNotLeaderNamesTheLeader(t *testing.T) {
	h := startOneGroup(t)
	addrs := h.c.ControllerAddrs()
	var leader uint64
	for deadline := time.Now().Add(10 * time.Second); leader == 0 && time.Now().Before(deadline); {
		for id := uint64(1); id <= 3; id++ {
			if s := h.c.Controller(id); s != nil && s.Node().Status().IsLeader {
				leader = id
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if leader == 0 {
		t.Fatal("no controller leader")
	}
	follower := leader%3 + 1
	conn, err := grpc.NewClient(addrs[follower-1], rpc.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	_, err = controllerpb.NewControllerClient(conn).Query(ctx, &controllerpb.QueryRequest{Num: -1})
	var nl *rpcerr.NotLeaderError
	if !errors.As(controllerpb.Errors.FromStatus(err), &nl) {
		t.Fatalf("follower %d answered %v, want NOT_LEADER", follower, err)
	}
	if nl.Leader != leader || nl.Addr != addrs[leader-1] {
		t.Fatalf("follower named leader %d at %q, want %d at %q", nl.Leader, nl.Addr, leader, addrs[leader-1])
	}
}

// TestResponseHeader: every reply says which replica answered, in which
// term, at which applied index and configuration.
func TestResponseHeader(t *testing.T) {
	h := startOneGroup(t)
	cl := h.client()
	h.put(cl, "k", "v")
	cfg := cl.Config()
	conn, err := grpc.NewClient(h.c.GroupAddrs(1)[0], rpc.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	reply, err := kvpb.NewKVClient(conn).Get(ctx, &kvpb.GetRequest{Key: []byte("k")}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	hd := reply.GetHeader()
	if hd.GetClusterId() == 0 || hd.GetGroup() != 1 || hd.GetReplica() != 1 || hd.GetTerm() == 0 ||
		hd.GetAppliedIndex() == 0 || hd.GetConfigNum() != cfg.Num {
		t.Fatalf("header %v, want cluster id, group 1, replica 1, a term, an applied index and configuration %d", hd, cfg.Num)
	}
	q, err := controllerpb.NewControllerClient(conn).Query(ctx, &controllerpb.QueryRequest{Num: -1})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("a group answered a controller query: %v %v", q, err)
	}
}
