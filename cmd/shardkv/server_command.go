package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// serverFlags are server's flags.
type serverFlags struct {
	r           replicaFlags
	gid         uint64
	replicas    []string // --replica: GROUP:ID=ADDR,...
	controllers string
	advertise   string // --advertise-addr; see self
	g           *globals
}

// self is the address the members name this node at: --advertise-addr,
// or --listen when it is not given.
func (s *serverFlags) self() string { return cmp.Or(s.advertise, s.r.listen) }

func newServerCmd(g *globals) *cobra.Command {
	s := &serverFlags{g: g}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a node: replicas of any number of replica groups",
		Long: `Run a node: one process, one data directory, one address and one /metrics
hosting replicas of any number of replica groups (at most one of each).
Every request names its group and goes to that group's replica; a request
for a group the node does not host is refused as WRONG_GROUP.

A replica is named once, when its group is created or it is added to one:
--replica GROUP:ID=ADDR,ID=ADDR,... lists the group's members, and the node
hosts the one at its own address (--advertise-addr, or --listen). The old form, --group, --id and
--peers, names one replica. A running node (even one started hosting
nothing) takes more replicas without a restart: 'shardkv admin join
--create' for a new group, 'shardkv admin member add' for a new replica of
a running group. The node records every replica it hosts in its data
directory and starts them all again at every start, named or not.
On its first start a replica learns the cluster's id from the controllers
(waiting for them); a group serves shards once 'shardkv admin join' added it
to the configuration.`,
		Example: `  shardkv server --listen 127.0.0.1:7111 --data /var/lib/shardkv/n1 --controllers $C \
    --replica 1:1=127.0.0.1:7111,2=127.0.0.1:7112,3=127.0.0.1:7113 \
    --replica 2:1=127.0.0.1:7112,2=127.0.0.1:7113,3=127.0.0.1:7111 \
    --replica 3:1=127.0.0.1:7113,2=127.0.0.1:7111,3=127.0.0.1:7112   # node 1 of 3: three groups, each spread over the nodes
  shardkv server --listen 127.0.0.1:7111 --data /var/lib/shardkv/n1 --controllers $C   # its restart: it hosts what it recorded
  shardkv server --listen 127.0.0.1:7114 --data /var/lib/shardkv/n4 --controllers $C   # a new node hosting nothing yet
  shardkv admin member add 1 4 127.0.0.1:7114   # ... hosts a new replica of group 1 at once
  shardkv admin join 1=127.0.0.1:7111,127.0.0.1:7112,127.0.0.1:7113 2=127.0.0.1:7112,127.0.0.1:7113,127.0.0.1:7111 \
    3=127.0.0.1:7113,127.0.0.1:7111,127.0.0.1:7112
  shardkv server --group 4 --id 1 --listen 127.0.0.1:7120 --data /var/lib/shardkv/g4r1 \
    --peers 1=127.0.0.1:7120,2=127.0.0.1:7121,3=127.0.0.1:7122 --controllers $C   # the one-replica form`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return s.run(cmd) },
	}
	s.r.register(cmd)
	cmd.Flags().Uint64Var(&s.gid, "group", 0, "the group of the replica --id and --peers name")
	cmd.Flags().StringArrayVar(&s.replicas, "replica", nil,
		"a replica this node hosts, as GROUP:ID=ADDR,ID=ADDR,... (every member of the group; this node's is the one at its own address, --advertise-addr or --listen); repeatable")
	cmd.Flags().StringVar(&s.advertise, "advertise-addr", "",
		"the address other processes reach this node at, when it is not --listen (a proxy's, a NAT's or a name's); groups' members name the node by it. Default: --listen")
	cmd.Flags().StringVar(&s.controllers, "controllers", defaultControllers, "controller addresses, comma separated")
	return processCommand(cmd)
}

// hostedReplica is a replica a node hosts and its group's members.
type hostedReplica struct {
	rep   storage.Replica
	peers map[uint64]string
	named bool // by the flags (not only stored)
	join  bool // a learner added to its running group, starting empty
}

// named returns the replicas the flags name, each group once.
func (s *serverFlags) named() ([]hostedReplica, error) {
	var out []hostedReplica
	if s.gid != 0 || s.r.id != 0 || s.r.peers != "" {
		if s.gid == 0 {
			return nil, usagef("--group must be a group id above 0")
		}
		peers, _, err := s.r.check()
		if err != nil {
			return nil, err
		}
		out = append(out, hostedReplica{rep: storage.Replica{Group: s.gid, ID: s.r.id}, peers: peers, named: true})
	}
	for _, spec := range s.replicas {
		h, err := parseHosted(spec, s.self())
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	seen := map[uint64]bool{}
	for _, h := range out {
		if seen[h.rep.Group] {
			return nil, usagef("group %d is named twice: a node hosts one replica of a group (two would fail together)", h.rep.Group)
		}
		seen[h.rep.Group] = true
	}
	if s.r.forceNew && len(out) != 1 {
		return nil, usagef("--force-new-cluster applies to one replica: name exactly one (--group, --id and --peers)")
	}
	return out, nil
}

// parseHosted reads --replica GROUP:ID=ADDR,...: the replica of GROUP at
// address self. Placement is checked here: a group listing self twice
// would put two of its replicas on one node.
func parseHosted(spec, self string) (hostedReplica, error) {
	gidStr, peersStr, ok := strings.Cut(spec, ":")
	gid, err := strconv.ParseUint(gidStr, 10, 64)
	if !ok || err != nil || gid == 0 {
		return hostedReplica{}, usagef("--replica: %q is not GROUP:ID=ADDR,... with GROUP > 0", spec)
	}
	peers, _, err := parsePeers(peersStr)
	if err != nil {
		return hostedReplica{}, err
	}
	var id uint64
	for pid, addr := range peers {
		if addr != self {
			continue
		}
		if id != 0 {
			return hostedReplica{}, usagef("--replica %s: replicas %d and %d of group %d are both on this node (%s); a node hosts one replica of a group",
				spec, min(id, pid), max(id, pid), gid, self)
		}
		id = pid
	}
	if id == 0 {
		return hostedReplica{}, usagef("--replica %s: no member of group %d is at this node's address %s (--advertise-addr, or --listen)", spec, gid, self)
	}
	return hostedReplica{rep: storage.Replica{Group: gid, ID: id}, peers: peers, named: true}, nil
}

// run serves the node until SIGINT or SIGTERM: every replica the flags name
// and every replica its data directory holds.
func (s *serverFlags) run(cmd *cobra.Command) error {
	log, err := s.g.logger()
	if err != nil {
		return err
	}
	if s.r.listen == "" || s.r.data == "" {
		return usagef("--listen and --data are required")
	}
	if s.advertise != "" {
		if err := rpc.CheckAddr(s.advertise); err != nil {
			return usagef("--advertise-addr: %v", err)
		}
	}
	if s.r.state != string(storage.ClusterNew) && s.r.state != string(storage.ClusterExisting) {
		return usagef("--initial-cluster-state must be new or existing, not %q", s.r.state)
	}
	named, err := s.named()
	if err != nil {
		return err
	}
	ctx, cancel := stopOnSignal(cmd.Context(), log)
	defer cancel()
	lis, e, err := openProcess(ctx, &s.r, log)
	if err != nil {
		return err
	}
	defer lis.Close()
	defer e.Close()
	hosted, err := s.hosted(e, named, log)
	if err != nil {
		return err
	}
	anyStored := slices.ContainsFunc(hosted, func(h hostedReplica) bool {
		_, ok, _ := e.LoadIdentity(h.rep)
		return ok
	})
	cid, err := s.clusterID(ctx, anyStored)
	if err != nil {
		return fmt.Errorf("learn the cluster id: %w", err)
	}
	// The replicas' identities are checked at once: a first start asks
	// its group's peers, which may take seconds while they start too.
	idents := make([]storage.Identity, len(hosted))
	errs := make([]error, len(hosted))
	var wg sync.WaitGroup
	for i := range hosted {
		wg.Go(func() {
			idents[i], hosted[i].join, errs[i] = ensureIdentity(ctx, e, hosted[i].rep, hosted[i].peers, storage.ClusterState(s.r.state), cid, s.r.tls.peerDial(cid), s.r.data)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	srv := &replicaServer{r: &s.r, peers: map[uint64]map[uint64]string{}, e: e, log: log, clusterID: cid}
	if len(hosted) > 0 {
		srv.clusterID = idents[0].ClusterID
	} else {
		log.Info("this node hosts no replica yet: `shardkv admin member add GROUP ID ADDR` with its address makes it host one", "address", s.self())
	}
	for i, h := range hosted {
		if idents[i].ClusterID != srv.clusterID {
			return fmt.Errorf("storage %s: %s belongs to cluster %016x, %s to cluster %016x: a node serves one cluster",
				s.r.data, hosted[0].rep, srv.clusterID, h.rep, idents[i].ClusterID)
		}
		srv.hosted = append(srv.hosted, h.rep)
		srv.peers[h.rep.Group] = idents[i].Current()
	}
	return srv.serve(ctx, lis, func(e *storage.Engine, net transport.Network, cid uint64, gs *grpc.Server, reg prometheus.Registerer,
		authView *auth.Holder) (func(), []*raftnode.Node, func() error, error) {
		return s.start(srv, e, net, cid, gs, reg, authView, hosted)
	})
}

// hosted adds to the replicas named those the engine holds (restarted
// with the membership they last applied), in (group, id) order. A group's
// stored replica and a named one must be the same. A replica named that
// was unhosted from this node (and not hosted again) is left out, with a
// log line: founding it again would start an empty member beside the
// group (`shardkv dev` and service files name the first replicas at
// every start).
func (s *serverFlags) hosted(e *storage.Engine, named []hostedReplica, log *slog.Logger) ([]hostedReplica, error) {
	stored, err := e.Replicas()
	if err != nil {
		return nil, err
	}
	var out []hostedReplica
	for _, h := range named {
		gone, err := e.Unhosted(h.rep)
		if err != nil {
			return nil, err
		}
		if gone {
			log.Warn("not hosting a replica named by --replica: it was unhosted from this node (admin member unhost); drop the flag", "replica", h.rep)
			continue
		}
		out = append(out, h)
	}
	named = out
	for _, rep := range stored {
		if rep.Group == 0 {
			continue // a controller's data: refused by its identity below if named
		}
		if i := slices.IndexFunc(named, func(h hostedReplica) bool { return h.rep.Group == rep.Group }); i >= 0 {
			if named[i].rep.ID != rep.ID {
				return nil, fmt.Errorf("storage %s: this node hosts replica %d of group %d, not replica %d: a node hosts one replica of a group "+
					"(replace a replica with `shardkv admin member`, on another node)", s.r.data, rep.ID, rep.Group, named[i].rep.ID)
			}
			continue
		}
		ident, _, err := e.LoadIdentity(rep)
		if err != nil {
			return nil, err
		}
		out = append(out, hostedReplica{rep: rep, peers: ident.Current()})
	}
	slices.SortFunc(out, func(a, b hostedReplica) int { return cmp.Compare(a.rep.Group, b.rep.Group) })
	return out, nil
}

// clusterID: a replica without a stored identity learns its cluster from
// the controllers, waiting for them; one with an identity checks it
// against them if they answer within seconds.
func (s *serverFlags) clusterID(ctx context.Context, stored bool) (uint64, error) {
	ctl, err := ctlclient.New(splitList(s.controllers), s.r.tls.peerDial(0)...)
	if err != nil {
		return 0, err
	}
	defer ctl.Close()
	if stored {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		id, _ := ctl.ClusterID(ctx)
		return id, nil
	}
	for {
		id, err := ctl.ClusterID(ctx)
		if err == nil || ctx.Err() != nil {
			return id, err
		}
		log, _ := s.g.logger()
		log.Warn("waiting for the controllers to learn the cluster id", "err", err)
		if err := rpc.Sleep(ctx, time.Second); err != nil {
			return 0, err
		}
	}
}

// authNote is the name of the auth state a group process saves (see
// followAuth).
const authNote = "auth-state"

// followAuth keeps authView at the cluster's auth state (auth.Follow),
// saving each new one in e: a restarted process holds the state it last
// learned at once (a user it revoked stays refused), and serves by it once
// a controller confirms it (auth.Holder.RequireConfirmation).
func followAuth(ctx context.Context, e *storage.Engine, authView *auth.Holder, ctl *ctlclient.Client, log *slog.Logger) error {
	// The saved state is unconfirmed until the first poll succeeds, and
	// any state once the controllers were out of reach for a lease.
	authView.RequireConfirmation(auth.Lease)
	saved, ok, err := e.LoadNote(authNote)
	if err != nil {
		return err
	}
	if ok {
		var st controllerpb.AuthStateReply
		if err := proto.Unmarshal(saved, &st); err != nil {
			return fmt.Errorf("storage %s: the saved auth state: %w", e.Dir(), err)
		}
		authView.Set(&st)
	}
	save := func(st *controllerpb.AuthStateReply) {
		st = proto.CloneOf(st)
		st.Header = nil
		data, err := proto.Marshal(st)
		if err == nil {
			err = e.SaveNote(authNote, data)
		}
		if err != nil {
			log.Warn("cannot save the auth state; a restart waits for a controller to learn it", "err", err)
		}
	}
	go auth.Follow(ctx, authView, ctl.AuthState, save, log)
	return nil
}

// start starts the node's group replicas (a replicaStart): one controller
// client and one connection pool for all of them, one Router serving
// their services on gs, the node's own service (memberpb.Node: Host adds
// replicas later), and the following of the auth state (auth.Follow) into
// authView.
func (s *serverFlags) start(srv *replicaServer, e *storage.Engine, net transport.Network, cid uint64, gs *grpc.Server, reg prometheus.Registerer,
	authView *auth.Holder, hosted []hostedReplica) (func(), []*raftnode.Node, func() error, error) {
	log, _ := s.g.logger()
	dial := s.r.tls.peerDial(cid)
	ctl, err := ctlclient.New(splitList(s.controllers), dial...)
	if err != nil {
		return nil, nil, nil, err
	}
	n := &node{s: s, srv: srv, e: e, net: net, cid: cid, reg: reg, ctl: ctl, pool: rpc.NewPool(dial...), hosting: semaphore.NewWeighted(1),
		router: groupserver.NewRouter(), log: log, metrics: map[storage.Replica]*groupserver.Metrics{}, retired: map[storage.Replica]*groupserver.Server{}}
	n.stopping, n.halt = context.WithCancel(context.Background())
	follow, stopFollow := context.WithCancel(context.Background())
	if s.r.tls.creds != nil { // a plaintext process enforces nothing (serverTLSFlags.guard)
		if err := followAuth(follow, e, authView, ctl, log); err != nil {
			stopFollow()
			n.halt()
			ctl.Close()
			n.pool.Close()
			return nil, nil, nil, err
		}
	}
	stop := func() {
		stopFollow()
		n.stop()
		ctl.Close()
		n.pool.Close()
	}
	var nodes []*raftnode.Node
	for _, h := range hosted {
		srv, err := n.start(h)
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		nodes = append(nodes, srv.Node())
	}
	n.router.Register(gs)
	memberpb.RegisterNodeServer(gs, n)
	return stop, nodes, n.ready, nil
}
