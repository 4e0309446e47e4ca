package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// Unhost implements memberpb.NodeServer: it stops the node's replica of a
// group and deletes it, when the replica no longer matters to a group of
// the configuration (unhostable). Host calls and Unhost calls run one at a
// time. The replica leaves the router (it no longer answers Identify or
// serves calls), is checked again, leaves the process's watch (its stop
// does not end the node), is stopped, waits for the calls it was serving
// (groupserver.Server.Retire), and is deleted in one synced batch
// (storage.Engine.DropReplica). A crash before the delete leaves it
// recorded, and the node's next start hosts it again (unhost it again); a
// failure after the stop leaves it stopped and retired (n.retired), and
// the next Unhost finishes the retirement and the delete.
//
// Not covered: a join of the replica's group (its same copy, rejoining)
// checked before the replica left the router and applied after the second
// check; the replica is then deleted while the join counts it. Do not
// unhost a group while joining it again.
func (n *node) Unhost(ctx context.Context, req *memberpb.UnhostRequest) (*memberpb.HostReply, error) {
	reply, err := n.guarded(ctx, func(ctx context.Context) (*memberpb.HostReply, error) { return n.unhost(ctx, req.GetGroup()) })
	if err != nil {
		n.log.Warn("refused to unhost a replica", "group", req.GetGroup(), "err", err)
	}
	return reply, memberpb.Errors.ToStatus(err)
}

func (n *node) unhost(ctx context.Context, gid uint64) (*memberpb.HostReply, error) {
	unlock, err := n.lockHosting(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	id, ident, err := n.recorded(gid)
	if err != nil {
		return nil, err
	}
	if id == 0 {
		return n.hostedReply(), nil // nothing of the group here (a retried call)
	}
	rep := storage.Replica{Group: gid, ID: id}
	n.mu.Lock()
	srv := n.retired[rep]
	n.mu.Unlock()
	if srv == nil {
		var running bool
		if srv, running = n.router.ReplicaOf(gid); !running {
			return nil, fmt.Errorf("%w: replica %d of group %d is recorded here but does not run (its start failed): "+
				"restart the node, then unhost it", memberpb.ErrStillMember, id, gid)
		}
		if err := n.unhostable(ctx, gid, id, ident.Current(), srv); err != nil {
			return nil, err
		}
		// Out of the router first (it no longer answers Identify as a
		// replica of the group, so no later join check counts it), then
		// checked again: a join of the group may have been applied since.
		n.router.Remove(srv)
		if err := n.unhostable(ctx, gid, id, ident.Current(), srv); err != nil {
			if aerr := n.router.Add(srv); aerr != nil {
				return nil, fmt.Errorf("%w (and serving it again failed: %w)", err, aerr)
			}
			return nil, err
		}
		n.srv.unserving(rep, srv.Node())
		srv.Stop()
		// Stopped: its raft node records no address any more.
		n.srv.network.Forget(gid)
		n.mu.Lock()
		n.servers = slices.DeleteFunc(n.servers, func(s *groupserver.Server) bool { return s == srv })
		n.retired[rep] = srv
		n.mu.Unlock()
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = srv.Retire(rctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("replica %d of group %d is stopped, but calls it was serving did not end (%w); "+
			"its data is kept: unhost it again", id, gid, err)
	}
	if err := n.e.DropReplica(rep); err != nil {
		return nil, fmt.Errorf("replica %d of group %d is stopped, but deleting it failed: %w; unhost it again", id, gid, err)
	}
	n.mu.Lock()
	delete(n.retired, rep)
	if m, ok := n.metrics[rep]; ok {
		m.Unregister(n.reg)
		delete(n.metrics, rep)
	}
	n.mu.Unlock()
	n.log.Info("unhosted a replica", "group", gid, "id", id)
	reply := n.hostedReply()
	reply.Dropped = &memberpb.HostedReplica{Group: gid, Id: id}
	return reply, nil
}

// unhostable returns nil when replica id of group gid, running as srv and
// recorded with the members given, no longer matters to a group of the configuration: it was removed from its
// group (it applied its removal, or a member of its copy of the group
// that did says so: a removed id never rejoins, so the answer never
// changes), or the controller's latest configuration does not have its
// group or records another incarnation of the id, and it holds no shard
// (a group that left hands its shards over first). Otherwise
// memberpb.ErrStillMember.
func (n *node) unhostable(ctx context.Context, gid, id uint64, given map[uint64]string, srv *groupserver.Server) error {
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
	if copyOf != 0 {
		maps.Copy(peers, given)
		maps.Copy(peers, m.Addrs)
	}
	if n.removedByAPeer(ctx, gid, id, copyOf, peers) {
		return nil
	}
	_, in := cfg.Groups[gid]
	switch {
	case in && sm.Incarnation() == 0:
		// Not caught up (a new learner), or a founder that never saw
		// a leader: it may be the configuration's copy.
		// Not "remove it first": if it is an orphan of another copy,
		// the configuration's member with its id is a healthy replica
		// elsewhere.
		return fmt.Errorf("%w: replica %d of group %d has not learned its group's incarnation yet, and configuration %d has group %d (at %s): "+
			"if it is a new learner of that group, let it catch up, or remove it from the group (admin member remove %d %d) and unhost it then; "+
			"if no member of that group is at this node's address, it is an orphan of an unfinished create: it stays until this node's data is wiped",
			memberpb.ErrStillMember, id, gid, cfg.Num, gid, strings.Join(cfg.Groups[gid], ","), gid, id)
	case in && !cfg.Foreign(gid, sm.Incarnation()):
		return fmt.Errorf("%w: replica %d is a member of group %d, which configuration %d has: remove it from the group first (admin member remove %d %d)",
			memberpb.ErrStillMember, id, gid, cfg.Num, gid, id)
	}
	return n.holdsNothing(ctx, gid, id, srv, cfg)
}

// removedByAPeer reports whether a member of replica id's copy of group
// gid (copyOf; peers by id) says it applied id's removal.
func (n *node) removedByAPeer(ctx context.Context, gid, id, copyOf uint64, peers map[uint64]string) bool {
	dial := n.s.r.tls.peerDial(n.cid)
	for pid, addr := range peers {
		if pid == id {
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
			return true
		}
	}
	return false
}

// holdsNothing refuses to drop replica id of group gid (srv) while it
// holds a shard, or may come to: cfg is the latest configuration, which
// does not have its copy.
func (n *node) holdsNothing(ctx context.Context, gid, id uint64, srv *groupserver.Server, cfg config.Config) error {
	sm := srv.StateMachine()
	// What it holds. At the latest configuration, which gives its copy
	// nothing, a shard it shows absent stays so (only a later
	// configuration could give it one). A lagging replica's view may be
	// from before its group owned anything: it catches up first (a read
	// index through its group's leader).
	v := sm.View()
	if v.Config.Num < cfg.Num {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if srv.Node().ReadIndex(bctx) == nil {
			v = sm.View()
		}
		cancel()
	}
	for s, sh := range v.Shards {
		if sh.State != group.Absent {
			return fmt.Errorf("%w: group %d is not in configuration %d as this copy, but its replica %d still holds shard %d (%v): "+
				"wait until its shards are handed over", memberpb.ErrStillMember, gid, cfg.Num, id, s, sh.State)
		}
	}
	if v.Config.Num < cfg.Num {
		return n.ownedNothingSince(ctx, gid, id, sm.Incarnation(), v.Config, cfg.Num)
	}
	return nil
}

// maxConfigScan bounds how many configurations ownedNothingSince reads.
const maxConfigScan = 1000

// ownedNothingSince decides for a replica still behind the latest
// configuration, latest (its group has no leader to bring it up to date,
// or has not installed them yet), that holds nothing at have, the
// configuration it installed: it may go only if no configuration after
// have gave its copy of group gid anything — have does not have the group,
// and no later one has it with this copy's incarnation (with none known,
// with any). An orphan founder of a create never joined, or a copy that
// left, handed everything over and then lost its quorum, goes; a replica
// whose group may own shards it has not applied stays.
func (n *node) ownedNothingSince(ctx context.Context, gid, id, incarnation uint64, have config.Config, latest uint64) error {
	if _, in := have.Groups[gid]; in {
		return fmt.Errorf("%w: group %d has not installed configuration %d yet (replica %d is at %d, which has the group): wait until it hands its shards over",
			memberpb.ErrStillMember, gid, latest, id, have.Num)
	}
	if latest-have.Num > maxConfigScan {
		return fmt.Errorf("%w: replica %d of group %d is at configuration %d, %d behind, and its group's leader did not bring it up to date",
			memberpb.ErrGroupUnreachable, id, gid, have.Num, latest-have.Num)
	}
	for num := have.Num + 1; num < latest; num++ {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, _, err := n.ctl.Query(qctx, int64(num))
		cancel()
		if err != nil {
			return fmt.Errorf("%w: read configuration %d: %w", memberpb.ErrGroupUnreachable, num, err)
		}
		if _, in := c.Groups[gid]; in && (incarnation == 0 || !c.Foreign(gid, incarnation)) {
			return fmt.Errorf("%w: configuration %d has group %d, and replica %d, at configuration %d, cannot tell what its group holds now "+
				"(no leader brought it up to date): wait until its group installs configuration %d", memberpb.ErrStillMember, num, gid, id, have.Num, latest)
		}
	}
	return nil
}
