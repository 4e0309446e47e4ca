package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// Unhost implements memberpb.NodeServer: it stops the node's replica of a
// group and deletes it, when the replica no longer matters to a group of
// the configuration (unhostable). Host calls and Unhost calls run one at a
// time. The replica is taken out of the process's watch first (its stop
// does not end the node), stopped, and then deleted in one synced batch
// (storage.Engine.DropReplica): a crash before the delete leaves it
// recorded, and the node's next start hosts it again (unhost it again).
func (n *node) Unhost(ctx context.Context, req *memberpb.UnhostRequest) (*memberpb.HostReply, error) {
	reply, err := n.guarded(ctx, func(ctx context.Context) (*memberpb.HostReply, error) { return n.unhost(ctx, req.GetGroup()) })
	if err != nil {
		n.log.Warn("refused to unhost a replica", "group", req.GetGroup(), "err", err)
	}
	return reply, memberpb.Errors.ToStatus(err)
}

func (n *node) unhost(ctx context.Context, gid uint64) (*memberpb.HostReply, error) {
	n.hostMu.Lock()
	defer n.hostMu.Unlock()
	id, _, err := n.recorded(gid)
	if err != nil {
		return nil, err
	}
	if id == 0 {
		return n.hostedReply(), nil // nothing of the group here (a retried call)
	}
	rep := storage.Replica{Group: gid, ID: id}
	if !n.retired[rep] {
		srv, running := n.router.ReplicaOf(gid)
		if !running {
			return nil, fmt.Errorf("%w: replica %d of group %d is recorded here but does not run (its start failed): "+
				"restart the node, then unhost it", memberpb.ErrStillMember, id, gid)
		}
		if err := n.unhostable(ctx, gid, id, srv); err != nil {
			return nil, err
		}
		// Out of the router first (it no longer answers Identify as a
		// replica of the group, so no join check counts it), then checked
		// again: a join of the group may have been checked meanwhile.
		n.router.Remove(srv)
		if err := n.unhostable(ctx, gid, id, srv); err != nil {
			if aerr := n.router.Add(srv); aerr != nil {
				return nil, fmt.Errorf("%w (and serving it again failed: %w)", err, aerr)
			}
			return nil, err
		}
		n.srv.unserving(rep, srv.Node())
		srv.Stop()
		n.mu.Lock()
		n.servers = slices.DeleteFunc(n.servers, func(s *groupserver.Server) bool { return s == srv })
		n.retired[rep] = true
		if m, ok := n.metrics[rep]; ok {
			m.Unregister(n.reg)
			delete(n.metrics, rep)
		}
		n.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := srv.Retire(rctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("replica %d of group %d is stopped, but calls it was serving did not end (%w); "+
				"its data is kept: unhost it again", id, gid, err)
		}
	}
	if err := n.e.DropReplica(rep); err != nil {
		return nil, fmt.Errorf("replica %d of group %d is stopped, but deleting it failed: %w; unhost it again", id, gid, err)
	}
	n.mu.Lock()
	delete(n.retired, rep)
	n.mu.Unlock()
	n.log.Info("unhosted a replica", "group", gid, "id", id)
	reply := n.hostedReply()
	reply.Dropped = &memberpb.HostedReplica{Group: gid, Id: id}
	return reply, nil
}

// unhostable returns nil when replica id of group gid, running as srv, no
// longer matters to a group of the configuration: it was removed from its
// group (it applied its removal, or a member of its copy of the group
// that did says so: a removed id never rejoins, so the answer never
// changes), or the controller's latest configuration does not have its
// group or records another incarnation of the id, and it holds no shard
// (a group that left hands its shards over first). Otherwise
// memberpb.ErrStillMember.
func (n *node) unhostable(ctx context.Context, gid, id uint64, srv *groupserver.Server) error {
	m := srv.Node().Members()
	if m.WasRemoved(id) {
		return nil
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cfg, _, err := n.ctl.Query(qctx, -1)
	cancel()
	if err != nil {
		return fmt.Errorf("%w: read the configuration: %w", memberpb.ErrGroupUnreachable, err)
	}
	sm := srv.StateMachine()
	// A member's word counts only from this replica's copy of the group
	// (a node at a member's address may host another copy of the id). A
	// replica that has not learned its incarnation (a learner that has
	// applied nothing yet, a founder that missed its group's first
	// entries) takes the word of the configuration's copy: either it is of
	// that copy, or of another copy, which no group of the configuration
	// needs. Without an incarnation on either side, only its own applied
	// removal counts.
	copyOf := sm.Incarnation()
	if copyOf == 0 {
		copyOf = cfg.Incarnations[gid]
	}
	// The members it applied, and those it was given when recorded (a
	// learner that has applied nothing yet knows only those).
	peers := map[uint64]string{}
	maps.Copy(peers, m.Addrs)
	if _, ident, err := n.recorded(gid); err == nil {
		for pid, addr := range ident.Current() {
			if _, ok := peers[pid]; !ok {
				peers[pid] = addr
			}
		}
	}
	dial := n.s.r.tls.peerDial(n.cid)
	for pid, addr := range peers {
		if pid == id || copyOf == 0 {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		who, err := transport.Identify(actx, addr, gid, dial...)
		var removed bool
		if err == nil && who.Group == gid && who.Incarnation == copyOf {
			reply, err := transport.AskMember(actx, addr, gid, id, dial...)
			removed = err == nil && reply.GetRemoved()
		}
		cancel()
		if removed {
			return nil
		}
	}
	_, in := cfg.Groups[gid]
	switch {
	case in && sm.Incarnation() == 0:
		// Not caught up (a new learner), or a founder that never saw
		// a leader: it may be the configuration's copy.
		return fmt.Errorf("%w: replica %d of group %d has not learned its group's incarnation yet, and configuration %d has group %d: "+
			"remove it from the group first (admin member remove %d %d)", memberpb.ErrStillMember, id, gid, cfg.Num, gid, gid, id)
	case in && !cfg.Foreign(gid, sm.Incarnation()):
		return fmt.Errorf("%w: replica %d is a member of group %d, which configuration %d has: remove it from the group first (admin member remove %d %d)",
			memberpb.ErrStillMember, id, gid, cfg.Num, gid, id)
	}
	// What it holds at the latest configuration, which gives its copy
	// nothing: once installed, a shard it shows absent stays so (only a
	// later configuration could give it one). A lagging replica's view may
	// be from before its group owned anything: it catches up first (a read
	// index through its group's leader), or is refused.
	v := sm.View()
	if v.Config.Num < cfg.Num {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := srv.Node().ReadIndex(bctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: replica %d of group %d is at configuration %d, not %d, and its group's leader did not answer: %w",
				memberpb.ErrGroupUnreachable, id, gid, v.Config.Num, cfg.Num, err)
		}
		if v = sm.View(); v.Config.Num < cfg.Num {
			return fmt.Errorf("%w: group %d has not installed configuration %d yet (replica %d is at %d): wait until it hands its shards over",
				memberpb.ErrStillMember, gid, cfg.Num, id, v.Config.Num)
		}
	}
	for s, sh := range v.Shards {
		if sh.State != group.Absent {
			return fmt.Errorf("%w: group %d is not in configuration %d as this copy, but its replica %d still holds shard %d (%v): "+
				"wait until its shards are handed over", memberpb.ErrStillMember, gid, cfg.Num, id, s, sh.State)
		}
	}
	return nil
}
