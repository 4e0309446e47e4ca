package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/raftnode"
)

// loseForGood stops replica r and deletes its data, as a machine that died.
func (h *harness) loseForGood(r cluster.Replica) {
	h.t.Helper()
	h.c.StopReplica(r)
	if err := os.RemoveAll(filepath.Join(h.dir, "data", fmt.Sprintf("g%d-r%d", r.Group, r.ID))); err != nil {
		h.t.Fatal(err)
	}
}

// replace replaces the lost replica old of group gid by a new one, as an
// operator does: add a learner on a new address, then promote it and
// remove old in one joint change. It returns the new replica.
func (h *harness) replace(gid, old uint64) cluster.Replica {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 60*time.Second)
	defer cancel()
	r, err := h.c.AddReplica(ctx, gid)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.c.ReplaceReplica(ctx, gid, old, r.ID); err != nil {
		h.t.Fatal(err)
	}
	m, _ := h.c.Members(gid)
	if !m.IsVoter(r.ID) || m.IsVoter(old) || m.Joint {
		h.t.Fatalf("group %d after replacing %d by %d: %+v", gid, old, r.ID, m)
	}
	return r
}

// TestReplaceDeadReplica: a group replica dies for good (process and data)
// while clients run; a replacement is added on a new address and the dead
// one removed; then a second original replica dies and the group keeps
// serving. The history is linearizable, every acknowledged write is there,
// and the controller's configuration routes to the new replica.
func TestReplaceDeadReplica(t *testing.T) {
	h := startOneGroup(t)
	h.checkLinearizable(6, func() {
		time.Sleep(300 * time.Millisecond)
		h.loseForGood(cluster.Replica{Group: 1, ID: 3})
		h.replace(1, 3)
		time.Sleep(300 * time.Millisecond)
		h.c.StopReplica(cluster.Replica{Group: 1, ID: 1})
		time.Sleep(700 * time.Millisecond)
	})
	// The group's leader, whichever replica it is (the replacement
	// included), tells the controller its new replicas: 1 (stopped, still
	// a voter), 2 and the replacement, and not replica 3.
	h.waitListed(1, h.c.GroupAddrs(1))
}

// TestReplaceTheOnlyReplica: the one replica of a group is replaced, so
// the replacement is the group's leader when the configuration is synced
// (the case where a replica added to the group leads). The controller's
// configuration ends up naming it, and only it.
func TestReplaceTheOnlyReplica(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1, Replicas: 1})
	h.join(1)
	cl := h.client()
	h.put(cl, "k", "v")
	ctx, cancel := context.WithTimeout(h.ctx, 60*time.Second)
	defer cancel()
	r, err := h.c.AddReplica(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The removed leader steps down; the replacement, the only voter left,
	// is elected (h.replace checks the leader's membership at once).
	if err := h.c.ReplaceReplica(ctx, 1, 1, r.ID); err != nil {
		t.Fatal(err)
	}
	h.waitListed(1, h.c.GroupAddrs(1))
	h.check(h.client(), "k", "v")
}

// waitListed waits until the controller's latest configuration lists
// exactly addrs (in any order) for group gid, as the group's leader tells
// it after a membership change.
func (h *harness) waitListed(gid uint64, addrs []string) {
	h.t.Helper()
	want := slices.Sorted(slices.Values(addrs))
	ctl := h.controller()
	defer ctl.Close()
	ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
	defer cancel()
	for {
		cfg, _, err := ctl.Query(ctx, -1)
		if err == nil && slices.Equal(slices.Sorted(slices.Values(cfg.Groups[gid])), want) {
			return
		}
		if err == nil {
			_, err = ctl.Watch(ctx, cfg.Num) // a newer configuration, or the server's wait limit
		}
		if ctx.Err() != nil {
			h.t.Fatalf("configuration %d lists group %d as %v (last error: %v), want %v", cfg.Num, gid, cfg.Groups[gid], err, want)
		}
	}
}

// TestReplaceDeadControllerReplica: the same for the controller.
func TestReplaceDeadControllerReplica(t *testing.T) {
	h := startOneGroup(t)
	h.checkLinearizable(4, func() {
		h.loseForGood(cluster.Replica{Group: 0, ID: 2})
		h.replace(0, 2)
		h.c.StopReplica(cluster.Replica{Group: 0, ID: 1})
		// Configuration changes still go through: two of three voters.
		h.join() // a no-op change still needs a quorum
		ctl := h.controller()
		defer ctl.Close()
		ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
		defer cancel()
		if _, _, err := ctl.Query(ctx, -1); err != nil {
			t.Fatalf("controller after replacing a replica and losing another: %v", err)
		}
	})
}

// TestLearnerCatchesUpBySnapshotWhileServing: a replica added to a group
// with a compacted log catches up by snapshot while writes go on.
func TestLearnerCatchesUpBySnapshotWhileServing(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1, TuneRaft: func(c *raftnode.Config) { c.SnapshotEntries, c.CatchUpEntries = 20, 5 }})
	h.join(1)
	a := h.startAppenders(4, 8, 5*time.Second)
	time.Sleep(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(h.ctx, 60*time.Second)
	defer cancel()
	r, err := h.c.AddReplica(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.ChangeMembership(ctx, 1, raftnode.MemberChange{Kind: raftnode.Promote, ID: r.ID}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	a.stopAndCheck()
	m, _ := h.c.Members(1)
	if !m.IsVoter(r.ID) {
		t.Fatalf("replica %d not a voter: %+v", r.ID, m)
	}
}

// TestForceNewClusterAfterLosingQuorum: a group loses two of its three
// replicas for good; its survivor, forced to be the only voter, serves
// again with every write it had, and replicas are added back.
func TestForceNewClusterAfterLosingQuorum(t *testing.T) {
	h := startOneGroup(t)
	cl := h.client()
	for i := 0; i < 20; i++ {
		h.put(cl, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
	}
	h.loseForGood(cluster.Replica{Group: 1, ID: 2})
	h.loseForGood(cluster.Replica{Group: 1, ID: 3})
	if err := h.c.ForceNewCluster(cluster.Replica{Group: 1, ID: 1}); err != nil {
		t.Fatal(err)
	}
	// Every put was acknowledged with all three replicas up: the survivor
	// has them all (in general it has what it acknowledged).
	for i := 0; i < 20; i++ {
		h.check(cl, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
	}
	h.put(cl, "after", "forced")
	ctx, cancel := context.WithTimeout(h.ctx, 60*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		r, err := h.c.AddReplica(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.c.ChangeMembership(ctx, 1, raftnode.MemberChange{Kind: raftnode.Promote, ID: r.ID}); err != nil {
			t.Fatal(err)
		}
	}
	if m, _ := h.c.Members(1); len(m.Voters) != 3 {
		t.Fatalf("voters after adding two back: %v", m.Voters)
	}
	h.check(cl, "after", "forced")
}
