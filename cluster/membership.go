package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/raftnode"
)

// tune is the raft tuning of a replica: the cluster's, Join for a replica
// added to a running group, ForceNewCluster for one forced (see
// ForceNewCluster).
func (c *Cluster) tune(join, force bool) func(*raftnode.Config) {
	return func(rc *raftnode.Config) {
		if c.opts.TuneRaft != nil {
			c.opts.TuneRaft(rc)
		}
		rc.Join, rc.ForceNewCluster = join, force
	}
}

// ForceNewCluster recovers group r.Group after it lost its quorum for good:
// it stops and forgets every other replica of the group and restarts r as
// the group's only voter (raftnode.Config.ForceNewCluster). Writes only
// the lost replicas had are lost. Add replicas back with AddReplica.
func (c *Cluster) ForceNewCluster(r Replica) error {
	others := slices.DeleteFunc(c.peers(r.Group), func(id uint64) bool { return id == r.ID })
	for _, id := range append(others, r.ID) {
		c.StopReplica(Replica{Group: r.Group, ID: id})
	}
	c.mu.Lock()
	c.forced[r] = true
	c.mu.Unlock()
	// Started with the flags it always had, then the others are forgotten.
	if err := c.StartReplica(r); err != nil {
		return err
	}
	for _, id := range others {
		c.forget(Replica{Group: r.Group, ID: id})
	}
	return nil
}

// node returns the raft node of a running replica, or nil.
func (c *Cluster) node(r Replica) *raftnode.Node {
	c.mu.Lock()
	m := c.members[r]
	c.mu.Unlock()
	switch {
	case m == nil:
		return nil
	case m.ctl != nil:
		return m.ctl.Node()
	case m.grp != nil:
		return m.grp.Node()
	}
	return nil
}

// ChangeMembership makes change in group gid (the controller for 0) on its
// leader, retrying while no leader is known or the learner is still
// behind, until ctx ends.
func (c *Cluster) ChangeMembership(ctx context.Context, gid uint64, change raftnode.MemberChange) (raftnode.Membership, error) {
	for {
		var last error = fmt.Errorf("group %d has no leader", gid)
		for _, id := range c.peers(gid) {
			n := c.node(Replica{Group: gid, ID: id})
			if n == nil || !n.Status().IsLeader {
				continue
			}
			m, err := n.ChangeMembership(ctx, change)
			if err == nil {
				return m, nil
			}
			if !rpcerr.CertainlyNotApplied(err) && !errors.Is(err, rpcerr.ErrLearnerBehind) && !errors.Is(err, rpcerr.ErrMembershipChangeInProgress) {
				return m, err
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return raftnode.Membership{}, fmt.Errorf("%w (last error: %w)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// AddReplica adds a replica to group gid (the controller for 0) as a
// learner, with the next free id and a new address, and starts it on
// empty data, as an operator replacing a machine does (`shardkv admin
// member add`, then `shardkv server --initial-cluster-state existing`). It
// catches up from the leader; promote it with ChangeMembership.
func (c *Cluster) AddReplica(ctx context.Context, gid uint64) (Replica, error) {
	addr, err := FreeAddr()
	if err != nil {
		return Replica{}, err
	}
	// The next id above every member's and every removed one's: a group
	// never takes a removed id again (raftnode's ErrMemberRemoved).
	r := Replica{Group: gid, ID: slices.Max(c.peers(gid)) + 1}
	if m, ok := c.Members(gid); ok && len(m.Removed) > 0 {
		r.ID = max(r.ID, slices.Max(m.Removed)+1)
	}
	c.mu.Lock()
	c.addrs[r], c.joining[r] = addr, true
	c.ids[gid] = append(c.ids[gid], r.ID)
	c.mu.Unlock()
	if _, err := c.ChangeMembership(ctx, gid, raftnode.MemberChange{Kind: raftnode.AddLearner, ID: r.ID, Addr: addr}); err != nil {
		return r, fmt.Errorf("add replica %d to group %d: %w", r.ID, gid, err)
	}
	return r, c.StartReplica(r)
}

// RemoveReplica removes replica id from group gid's membership, stops it
// if it runs, and forgets it (its data stays on disk).
func (c *Cluster) RemoveReplica(ctx context.Context, gid, id uint64) error {
	if _, err := c.ChangeMembership(ctx, gid, raftnode.MemberChange{Kind: raftnode.Remove, ID: id}); err != nil {
		return fmt.Errorf("remove replica %d of group %d: %w", id, gid, err)
	}
	c.forget(Replica{Group: gid, ID: id})
	return nil
}

// ReplaceReplica promotes the learner id of group gid and removes the voter
// old in one joint-consensus change, then stops and forgets old.
func (c *Cluster) ReplaceReplica(ctx context.Context, gid, old, id uint64) error {
	if _, err := c.ChangeMembership(ctx, gid, raftnode.MemberChange{Kind: raftnode.Replace, ID: id, Old: old}); err != nil {
		return fmt.Errorf("replace replica %d of group %d by %d: %w", old, gid, id, err)
	}
	c.forget(Replica{Group: gid, ID: old})
	return nil
}

func (c *Cluster) forget(r Replica) {
	c.StopReplica(r)
	c.mu.Lock()
	c.ids[r.Group] = slices.DeleteFunc(c.ids[r.Group], func(id uint64) bool { return id == r.ID })
	c.mu.Unlock()
}

// Members returns group gid's membership as its leader applied it.
func (c *Cluster) Members(gid uint64) (raftnode.Membership, bool) {
	for _, id := range c.peers(gid) {
		if n := c.node(Replica{Group: gid, ID: id}); n != nil && n.Status().IsLeader {
			return n.Members(), true
		}
	}
	return raftnode.Membership{}, false
}
