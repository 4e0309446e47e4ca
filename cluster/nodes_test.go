package cluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/transport"
)

// TestNodeRefusesGroupsItDoesNotHost: three groups of three on four nodes,
// so the fourth node hosts no replica of group 1. Every service of a node
// answers for the group a request names; a group the node does not host,
// or no group at all on a node hosting several, is refused as
// WRONG_GROUP, and clients are served throughout.
func TestNodeRefusesGroupsItDoesNotHost(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3, Nodes: 4})
	h.join(1, 2, 3)
	cl := h.client()
	h.put(cl, "k", "v")
	addr, hosted := h.c.Node(3)
	for _, r := range hosted {
		if r.Group == 1 {
			t.Fatalf("node 4 hosts %v, want no replica of group 1", hosted)
		}
	}
	conn, err := grpc.NewClient(addr, rpc.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kv := kvpb.NewKVClient(conn)
	for _, gid := range []uint64{1, 0, 99} {
		_, err := kv.Get(h.ctx, &kvpb.GetRequest{Key: []byte("k"), Group: gid}, grpc.WaitForReady(true))
		if !errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrWrongGroup) {
			t.Fatalf("get for group %d at a node not hosting it: %v, want WRONG_GROUP", gid, err)
		}
		_, err = kv.Write(h.ctx, &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_OPEN_SESSION, Key: []byte("k"), ClientId: 9, Group: gid})
		if !errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrWrongGroup) {
			t.Fatalf("write for group %d at a node not hosting it: %v, want WRONG_GROUP", gid, err)
		}
	}
	if _, err := memberpb.NewMembershipClient(conn).List(h.ctx, &memberpb.ListRequest{Group: 1}); !errors.Is(memberpb.Errors.FromStatus(err), memberpb.ErrWrongGroup) {
		t.Fatalf("membership of group 1 at a node not hosting it: %v", err)
	}
	for _, r := range hosted {
		st, err := kv.Status(h.ctx, &kvpb.StatusRequest{Group: r.Group})
		if err != nil || st.GetGroup() != r.Group || st.GetReplica() != r.ID {
			t.Fatalf("status of group %d: %v %v, want replica %d", r.Group, st, err, r.ID)
		}
		id, err := transport.Identify(h.ctx, addr, r.Group)
		if err != nil || id.Group != r.Group || id.Replica != r.ID {
			t.Fatalf("identify group %d: %+v %v", r.Group, id, err)
		}
	}
	if id, err := transport.Identify(h.ctx, addr, 1); err != nil || id.Group != 0 {
		t.Fatalf("identify group 1 at a node not hosting it: %+v %v, want group 0", id, err)
	}
	h.check(cl, "k", "v")
}

// TestNodesLinearizableThroughChangesAndNodeKills: three groups of three
// replicas on three nodes (every node one replica of each group). Clients
// run mixed operations while groups join, leave and move shards and whole
// nodes are killed and restarted; porcupine checks the history. A node
// killed takes down one replica of each group, never two of one, so every
// group keeps its majority; a restarted node recovers every replica it
// hosts (each catches up with its group's latest configuration and log).
func TestNodesLinearizableThroughChangesAndNodeKills(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3, Nodes: 3})
	h.join(1)
	ctl := h.controller()
	defer ctl.Close()
	pause := func() { time.Sleep(300 * time.Millisecond) }
	restart := func(n int) {
		t.Helper()
		if err := h.c.StartNode(n); err != nil {
			t.Fatalf("restart node %d: %v", n+1, err)
		}
	}
	move := func(shard int, gid uint64) {
		t.Helper()
		h.must("move", func(ctx context.Context) error {
			_, err := ctl.Move(ctx, shard, gid)
			return err
		})
	}
	// A join is checked with every replica of the joining group, so joins
	// happen with every node up; leaves and moves with one down.
	h.checkLinearizable(8, func() {
		h.join(2)
		pause()
		h.c.StopNode(0)
		move(0, 2)
		pause()
		restart(0)
		h.join(3)
		pause()
		h.c.StopNode(1)
		h.leave(1)
		pause()
		restart(1)
		h.c.StopNode(2)
		move(1, 3)
		pause()
		restart(2)
		h.join(1)
		h.leave(2)
		pause()
	})
	h.waitSettled()
	for n := range 3 {
		h.waitNodeCaughtUp(n)
	}
}

// waitNodeCaughtUp waits until every replica node n hosts has applied its
// group's latest configuration and everything its leader had committed
// when the wait began.
func (h *harness) waitNodeCaughtUp(n int) {
	h.t.Helper()
	_, hosted := h.c.Node(n)
	latest := h.latest()
	commit := map[uint64]uint64{}
	for _, r := range h.c.Replicas() {
		if s := h.c.Group(r); s != nil && s.Node().Status().IsLeader {
			commit[r.Group] = s.Node().Status().Commit
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range hosted {
		for {
			s := h.c.Group(r)
			if s == nil {
				h.t.Fatalf("%v is not running", r)
			}
			_, member := latest.Groups[r.Group]
			num := s.StateMachine().View().Config.Num
			if (!member || num == latest.Num) && s.Node().Status().Applied >= commit[r.Group] {
				break
			}
			if time.Now().After(deadline) {
				h.t.Fatalf("%v at configuration %d, applied %d; latest %d, leader's commit %d", r, num, s.Node().Status().Applied, latest.Num, commit[r.Group])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
