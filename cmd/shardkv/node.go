package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/internal/memberclient"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// node is a running node's group replicas and what they share: the
// engine, the raft network, one controller client, one connection pool
// and one Router. It serves memberpb.Node: Host starts one more replica
// while the others serve on.
type node struct {
	memberpb.UnimplementedNodeServer
	s      *serverFlags
	srv    *replicaServer // the process: peers' addresses, metrics, readiness
	e      *storage.Engine
	net    transport.Network
	cid    uint64
	reg    prometheus.Registerer
	ctl    *ctlclient.Client
	pool   *rpc.Pool
	router *groupserver.Router
	log    *slog.Logger

	// hosting is held while a Host or Unhost runs (one at a time: each
	// asks its group's leader or the controller first, and records
	// nothing until its checks pass); a call waits for it only as long as
	// its ctx allows.
	hosting *semaphore.Weighted

	// stopping ends when the node stops: Host calls in flight give up
	// (inflight counts them; stop waits for them before the engine closes).
	stopping context.Context
	halt     context.CancelFunc
	inflight sync.WaitGroup

	mu      sync.Mutex
	servers []*groupserver.Server
	metrics map[storage.Replica]*groupserver.Metrics // registered once, kept across a failed start
	retired map[storage.Replica]*groupserver.Server  // stopped by an Unhost that has not deleted them yet
	stopped bool
}

// start starts replica h and serves its group through the router. The
// node's lock is not held while the replica starts: readiness and stop
// are not held up by it.
func (n *node) start(h hostedReplica) (*groupserver.Server, error) {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil, rpcerr.ErrStopped
	}
	m, ok := n.metrics[h.rep]
	if !ok {
		m = groupserver.NewMetrics(n.reg, h.rep.Group, h.rep.ID)
		n.metrics[h.rep] = m
	}
	n.mu.Unlock()
	tune := func(c *raftnode.Config) {
		n.s.r.tune(c)
		c.Join = h.join
	}
	srv, err := groupserver.Start(groupserver.Config{GID: h.rep.Group, ID: h.rep.ID, ClusterID: n.cid, Peers: slices.Sorted(maps.Keys(h.peers)),
		Engine: n.e, Network: n.net, Controller: n.ctl, Logger: n.log, Metrics: m,
		Tune: tune, Pool: n.pool, Dial: n.s.r.tls.tlsDial()})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", h.rep, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		srv.Stop()
		return nil, rpcerr.ErrStopped
	}
	if err := n.router.Add(srv); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("start %s: %w", h.rep, err)
	}
	n.servers = append(n.servers, srv)
	delete(n.retired, h.rep) // hosted again before an Unhost deleted it: a later Unhost checks it anew
	return srv, nil
}

// stop stops every replica, once the Host calls in flight have given up;
// Host refuses from then on.
func (n *node) stop() {
	n.mu.Lock()
	n.stopped = true
	n.mu.Unlock()
	n.halt()
	n.inflight.Wait()
	n.mu.Lock()
	servers := n.servers
	n.mu.Unlock()
	for _, srv := range servers {
		n.router.Remove(srv)
		srv.Stop()
	}
}

// ready reports the replicas' own condition (groupserver.Server.Ready).
func (n *node) ready() error {
	n.mu.Lock()
	servers := slices.Clone(n.servers)
	n.mu.Unlock()
	for _, srv := range servers {
		if err := srv.Ready(); err != nil {
			return err
		}
	}
	return nil
}

// Host implements memberpb.NodeServer: it checks the request against the
// node (the replica's address is the node's, no other replica of its group
// recorded here), then either against the group's leader (the replica is
// its learner that has acknowledged nothing: `admin member add` made it),
// recording the replica's identity as a joiner, or, to create a group,
// against the controller's configuration and every other founder's node
// (creatable), recording it as a founder; and starts it. Each refusal
// changes nothing.
func (n *node) Host(ctx context.Context, req *memberpb.HostRequest) (*memberpb.HostReply, error) {
	reply, err := n.guarded(ctx, func(ctx context.Context) (*memberpb.HostReply, error) { return n.host(ctx, req) })
	if err != nil {
		n.log.Warn("refused to host a replica", "group", req.GetGroup(), "id", req.GetId(), "create", req.GetCreate(), "err", err)
	}
	return reply, memberpb.Errors.ToStatus(err)
}

// guarded runs f as one of the node's Host or Unhost calls: refused once
// the node stops, and given up when it stops (which waits for it before
// the engine closes).
func (n *node) guarded(ctx context.Context, f func(context.Context) (*memberpb.HostReply, error)) (*memberpb.HostReply, error) {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil, rpcerr.ErrStopped
	}
	n.inflight.Add(1)
	n.mu.Unlock()
	defer n.inflight.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(n.stopping, cancel)()
	return f(ctx)
}

func (n *node) host(ctx context.Context, req *memberpb.HostRequest) (*memberpb.HostReply, error) {
	gid, id, members := req.GetGroup(), req.GetId(), req.GetMembers()
	if err := checkHostRequest(gid, id, members, n.s.self()); err != nil {
		return nil, err
	}
	unlock, err := n.lockHosting(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rep := storage.Replica{Group: gid, ID: id}
	recorded, ident, err := n.recorded(gid)
	if err != nil {
		return nil, err
	}
	if err := n.hostable(rep, req, recorded, ident); err != nil {
		return nil, err
	}
	if _, running := n.router.Hosted()[gid]; running {
		return n.hostedReply(), nil
	}
	h := hostedReplica{rep: rep, peers: members}
	record, token, err := n.identityToRecord(ctx, req, &h, recorded, ident)
	if err != nil {
		return nil, err
	}
	if req.GetCheck() {
		return n.hostedReply(), nil
	}
	if record != "" {
		if _, err := n.e.EnsureIdentity(rep, storage.Identity{ClusterID: n.cid, Peers: members, Token: token}, record); err != nil {
			return nil, err
		}
	}
	n.srv.addPeers(gid, h.peers)
	srv, err := n.start(h)
	if err != nil {
		return nil, err
	}
	n.srv.serving(rep, srv.Node())
	n.log.Info("hosting a new replica", "group", gid, "id", id, "create", req.GetCreate(), "members", members)
	return n.hostedReply(), nil
}

// lockHosting waits, as long as ctx allows, until no other Host or
// Unhost runs on the node, and returns what ends its own turn.
func (n *node) lockHosting(ctx context.Context) (unlock func(), err error) {
	if err := n.hosting.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("waiting for another host or unhost on this node: %w", err)
	}
	return func() { n.hosting.Release(1) }, nil
}

// checkHostRequest refuses a Host request that cannot be right whatever
// the node holds: the controller's group, a replica the members do not
// list, or list at another node than self, or two replicas of the group
// on self.
func checkHostRequest(gid, id uint64, members map[uint64]string, self string) error {
	switch {
	case gid == 0:
		return fmt.Errorf("%w: group 0 is the controller, which runs apart from nodes", rpcerr.ErrBadMemberChange)
	case id == 0 || members[id] == "":
		return fmt.Errorf("%w: the members must list replica %d with its address", rpcerr.ErrBadMemberChange, id)
	case members[id] != self:
		return fmt.Errorf("%w: the members put replica %d of group %d at %s, this node is %s", memberpb.ErrNotThisNode, id, gid, members[id], self)
	}
	for pid, addr := range members {
		if pid != id && addr == self {
			return fmt.Errorf("%w: the members put replicas %d and %d of group %d on this node (%s); a node hosts one replica of a group",
				memberpb.ErrHostsOtherReplica, min(id, pid), max(id, pid), gid, self)
		}
	}
	return nil
}

// hostable refuses replica rep where this node records another replica
// of its group (recorded, with identity ident), hosts it from another
// founding than a create names, or dropped it (a copy of the group that
// still lists it here would reach a new one).
func (n *node) hostable(rep storage.Replica, req *memberpb.HostRequest, recorded uint64, ident storage.Identity) error {
	gid, id := rep.Group, rep.ID
	if recorded != 0 && recorded != id {
		return fmt.Errorf("%w: this node hosts replica %d of group %d", memberpb.ErrHostsOtherReplica, recorded, gid)
	}
	if here := hostingReply(recorded, ident); recorded == id && req.GetCreate() && !foundedWith(here, id, req.GetMembers()) {
		return fmt.Errorf("%w: this node hosts replica %d of group %d, %s", memberpb.ErrGroupExists, id, gid, howFounded(here))
	}
	if recorded != 0 {
		return nil
	}
	// Raft messages are addressed by group and id: a copy of the group
	// that still lists the dropped replica here (a left copy whose other
	// nodes still run it, say) would reach the new one, which would take
	// its terms, votes and entries as its own.
	gone, err := n.e.Unhosted(rep)
	if err != nil {
		return err
	}
	if gone {
		return fmt.Errorf("%w: this node dropped replica %d of group %d (admin member unhost), and a copy of the group that still lists it at %s "+
			"would reach a new one: host it under another id (another position in join --create, another id in member add), on another node, or give the new group another id",
			memberpb.ErrDroppedHere, id, gid, n.s.self())
	}
	return nil
}

// identityToRecord decides how h starts, and what identity and founding
// token (see storage.Identity.Token) to record for it first: none for a
// replica an earlier Host recorded and failed to start (it starts as its
// identity says); a new founder's, once creatable; or a joiner's, once
// the group's leader confirms h is a learner it added that has
// acknowledged nothing.
func (n *node) identityToRecord(ctx context.Context, req *memberpb.HostRequest, h *hostedReplica, recorded uint64, ident storage.Identity) (storage.ClusterState, uint64, error) {
	gid, id, members := req.GetGroup(), req.GetId(), req.GetMembers()
	switch {
	case recorded == id:
		h.peers = ident.Current()
		return "", 0, nil
	case req.GetCreate():
		// Every founder is given the same members (admin join --create
		// sends one list), so their addresses tell this copy apart.
		token := storage.FoundingTokenFor(n.cid, gid, members)
		if err := n.creatable(ctx, gid, id, members, token); err != nil {
			return "", 0, err
		}
		return storage.ClusterNew, token, nil
	default:
		learner, leaderToken, answered := learnerOf(ctx, gid, id, members, n.s.r.tls.peerDial(n.cid))
		if !answered {
			return "", 0, fmt.Errorf("%w: no leader of group %d among %v answered", memberpb.ErrGroupUnreachable, gid, slices.Sorted(maps.Values(members)))
		}
		if !learner {
			return "", 0, fmt.Errorf("%w: group %d's leader does not have replica %d as a learner that has acknowledged nothing yet",
				memberpb.ErrNotAdded, gid, id)
		}
		h.join = true
		return storage.ClusterJoin, leaderToken, nil
	}
}

// recorded returns the replica of group gid this node has recorded (its
// identity stored: running, or recorded by a Host whose start failed), or
// 0.
func (n *node) recorded(gid uint64) (uint64, storage.Identity, error) {
	reps, err := n.e.Replicas()
	if err != nil {
		return 0, storage.Identity{}, err
	}
	for _, r := range reps {
		if r.Group == gid {
			ident, _, err := n.e.LoadIdentity(r)
			return r.ID, ident, err
		}
	}
	return 0, storage.Identity{}, nil
}

// hostingReply is what Hosting answers for recorded replica id (0: none)
// with identity ident.
func hostingReply(id uint64, ident storage.Identity) *memberpb.HostingReply {
	if id == 0 {
		return &memberpb.HostingReply{}
	}
	reply := &memberpb.HostingReply{Id: id, Joined: ident.Joined}
	if !ident.Joined {
		reply.Founders = ident.Peers
	}
	return reply
}

// foundedWith reports whether a node's replica (as Hosting answers it) is
// replica id of a group founded with members.
func foundedWith(r *memberpb.HostingReply, id uint64, members map[uint64]string) bool {
	return r.GetId() == id && !r.GetJoined() && maps.Equal(r.GetFounders(), members)
}

// howFounded says how a node's replica came to its group.
func howFounded(r *memberpb.HostingReply) string {
	if r.GetJoined() {
		return "added to the running group"
	}
	return fmt.Sprintf("founded with %v", r.GetFounders())
}

// Hosting implements memberpb.NodeServer.
func (n *node) Hosting(_ context.Context, req *memberpb.HostingRequest) (*memberpb.HostingReply, error) {
	id, ident, err := n.recorded(req.GetGroup())
	if err != nil {
		return nil, memberpb.Errors.ToStatus(err)
	}
	return hostingReply(id, ident), nil
}

// creatable checks that group gid is new before replica id founds it with
// members: the controller's latest configuration does not have it (a
// group that exists takes replicas by member add); every other founder's
// node answers (fail closed: a node out of reach may host the group) and
// hosts nothing of the group, or the same replica of the same founding (a
// create retried after it reached some nodes); and no member leads it
// with this replica's acknowledgements (notBootstrapped: this replica ran
// before and lost its data) or runs it with another founding token than
// token, the one this founder would hold (notBootstrapped).
func (n *node) creatable(ctx context.Context, gid, id uint64, members map[uint64]string, token uint64) error {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cfg, _, err := n.ctl.Query(qctx, -1)
	cancel()
	if err != nil {
		return fmt.Errorf("read the configuration before creating group %d: %w", gid, err)
	}
	if addrs, ok := cfg.Groups[gid]; ok {
		return fmt.Errorf("%w: configuration %d has group %d at %v", memberpb.ErrGroupExists, cfg.Num, gid, addrs)
	}
	for _, pid := range slices.Sorted(maps.Keys(members)) {
		if pid == id {
			continue
		}
		addr := members[pid]
		reply, err := memberclient.Hosting(ctx, n.pool, addr, gid, 5*time.Second)
		switch {
		case err != nil:
			return fmt.Errorf("%w: every founder's node must answer before a group is created: the node at %s (replica %d): %w",
				memberpb.ErrGroupUnreachable, addr, pid, err)
		case reply.GetId() == 0:
		case !foundedWith(reply, pid, members):
			return fmt.Errorf("%w: the node at %s hosts replica %d of group %d, %s", memberpb.ErrGroupExists, addr, reply.GetId(), gid, howFounded(reply))
		}
	}
	if err := notBootstrapped(ctx, gid, id, members, token, n.s.r.tls.peerDial(n.cid), n.s.r.data); err != nil {
		return fmt.Errorf("%w: %w", memberpb.ErrGroupExists, err)
	}
	return nil
}

// hostedReply lists the replicas the node hosts, by group.
func (n *node) hostedReply() *memberpb.HostReply {
	hosted := n.router.Hosted()
	reply := &memberpb.HostReply{}
	for _, gid := range slices.Sorted(maps.Keys(hosted)) {
		reply.Hosted = append(reply.Hosted, &memberpb.HostedReplica{Group: gid, Id: hosted[gid]})
	}
	return reply
}
