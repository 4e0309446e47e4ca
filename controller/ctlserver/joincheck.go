package ctlserver

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/transport"
)

// JoinCheckLimit bounds the leader's check of a join's replicas. A
// controller client's attempt lasts a second (package ctlclient), and the
// proposal must fit in it too: the check takes at most half of what is left
// of the request's deadline, and never more than this.
const JoinCheckLimit = time.Second

// joinRefusal is a failed check: kind is controllerpb.ErrBadReplica,
// controllerpb.ErrReplicaUnreachable or controllerpb.ErrGroupNotReady;
// reason names every bad replica and why.
type joinRefusal struct {
	kind   error
	reason string
}

func (r *joinRefusal) Error() string { return r.kind.Error() + ": " + r.reason }
func (r *joinRefusal) Unwrap() error { return r.kind }

// checkJoin checks every replica of groups, the groups a join adds, before
// the join is proposed: each address must be host:port, and each replica
// must answer Identify within the time limit, state this cluster's id, and
// say it is a replica of the group it is joined to, each listed once. A
// group that is not running, a typo in an address, or another group's or
// cluster's replica would otherwise own shards nobody can hand it, and the
// groups that must hand them over would wait for it forever.
//
// It also learns each group's incarnation (controllerpb.Group.incarnation),
// which the join records: every replica must state the same one (a group
// just founded has none until its first leader's is applied and its
// replicas apply it: ErrGroupNotReady). Two incarnations among one
// group's addresses are two copies of the group id, refused. An
// incarnation the request names is never recorded on its own: the
// replicas must state it (only a controller that skips the check records
// the request's value as given). It returns the incarnation of each group, by
// id.
func (s *Server) checkJoin(ctx context.Context, groups []*controllerpb.Group) (map[uint64]uint64, *joinRefusal) {
	return s.checkReplicas(ctx, groups, true)
}

// checkReplicas is checkJoin; needIncarnation says a group whose replicas
// state none is refused as not ready (a join), rather than accepted (new
// addresses of a group that joined: replicas still catching up).
func (s *Server) checkReplicas(ctx context.Context, groups []*controllerpb.Group, needIncarnation bool) (map[uint64]uint64, *joinRefusal) {
	var f joinFindings
	for _, g := range groups {
		for _, addr := range g.GetAddrs() {
			if err := rpc.CheckAddr(addr); err != nil {
				f.bad = append(f.bad, fmt.Sprintf("group %d: %q is not host:port (%v)", g.GetId(), addr, err))
			}
		}
	}
	if r := f.refusal(); r != nil {
		return nil, r
	}
	answers, limit := s.identifyAll(ctx, groups)
	incarnations := map[uint64]uint64{}
	for i, g := range groups {
		if inc := f.judge(g, answers[i], limit, s.clusterID, needIncarnation); inc != 0 {
			incarnations[g.GetId()] = inc
		}
	}
	if r := f.refusal(); r != nil {
		return nil, r
	}
	return incarnations, nil
}

// identity is one replica's answer to Identify.
type identity struct {
	id  transport.ReplicaIdentity
	err error
}

// identifyAll asks every listed address at once which replica it hosts
// (transport.Identify), within JoinCheckLimit or half of ctx's time left:
// answers[i][j] is groups[i]'s j-th address's.
func (s *Server) identifyAll(ctx context.Context, groups []*controllerpb.Group) (answers [][]identity, limit time.Duration) {
	limit = JoinCheckLimit
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl)/2)
	}
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	dial := rpc.DialOptions(s.cfg.Dial...)
	if s.clusterID != 0 {
		dial = rpc.DialOptions(append(rpc.WithClusterID(s.clusterID), s.cfg.Dial...)...)
	}
	answers = make([][]identity, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		answers[i] = make([]identity, len(g.GetAddrs()))
		for j, addr := range g.GetAddrs() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id, err := transport.Identify(cctx, addr, g.GetId(), dial...)
				answers[i][j] = identity{id, err}
			}()
		}
	}
	wg.Wait()
	return answers, limit
}

// joinFindings are what the checks of a join found wrong, by the refusal
// each calls for.
type joinFindings struct {
	bad, unreachable, notReady []string
}

// refusal is the join's refusal, if anything was found: a bad replica
// first (the unreachable ones named too), then an unreachable one, then a
// group not ready.
func (f *joinFindings) refusal() *joinRefusal {
	switch {
	case len(f.bad) > 0:
		return &joinRefusal{kind: controllerpb.ErrBadReplica, reason: strings.Join(append(f.bad, f.unreachable...), "; ")}
	case len(f.unreachable) > 0:
		return &joinRefusal{kind: controllerpb.ErrReplicaUnreachable, reason: strings.Join(append(f.unreachable, f.notReady...), "; ")}
	case len(f.notReady) > 0:
		return &joinRefusal{kind: controllerpb.ErrGroupNotReady, reason: strings.Join(f.notReady, "; ")}
	}
	return nil
}

// judge checks group g's answers (one per address, in order) against
// this cluster (clusterID), records what is wrong, and returns the
// incarnation its replicas state (0: none, or not one).
func (f *joinFindings) judge(g *controllerpb.Group, answers []identity, limit time.Duration, clusterID uint64, needIncarnation bool) uint64 {
	gid := g.GetId()
	seen := map[uint64]string{}     // replica id -> its address
	stated := map[uint64][]string{} // incarnation -> the addresses that state it
	var silent []string             // replicas that state none yet
	for j, addr := range g.GetAddrs() {
		a := answers[j]
		switch {
		case a.err != nil && rpc.IsClusterMismatch(a.err):
			f.bad = append(f.bad, fmt.Sprintf("group %d: %s belongs to another cluster (%s)", gid, addr, status.Convert(a.err).Message()))
		case status.Code(a.err) == codes.Unimplemented:
			f.bad = append(f.bad, fmt.Sprintf("group %d: %s serves no replica group (a controller, or another program?)", gid, addr))
		case a.err != nil:
			f.unreachable = append(f.unreachable, fmt.Sprintf("group %d: replica %s did not answer within %v (%s)",
				gid, addr, limit.Round(time.Millisecond), cause(a.err)))
		case a.id.ClusterID == 0:
			f.bad = append(f.bad, fmt.Sprintf("group %d: %s states no cluster id", gid, addr))
		case a.id.ClusterID != clusterID:
			f.bad = append(f.bad, fmt.Sprintf("group %d: %s states cluster %016x, this cluster is %016x", gid, addr, a.id.ClusterID, clusterID))
		case a.id.Group == 0:
			f.bad = append(f.bad, fmt.Sprintf("group %d: %s hosts no replica of group %d", gid, addr, gid))
		case a.id.Group != gid:
			f.bad = append(f.bad, fmt.Sprintf("group %d: %s is replica %d of group %d, not of group %d", gid, addr, a.id.Replica, a.id.Group, gid))
		case seen[a.id.Replica] != "":
			f.bad = append(f.bad, fmt.Sprintf("group %d: %s and %s are the same replica (replica %d)", gid, seen[a.id.Replica], addr, a.id.Replica))
		default:
			seen[a.id.Replica] = addr
			if a.id.Incarnation == 0 {
				silent = append(silent, addr)
			} else {
				stated[a.id.Incarnation] = append(stated[a.id.Incarnation], addr)
			}
		}
	}
	// Only what replicas state is recorded; an incarnation the request
	// names (the group's, from an earlier configuration) must be the one
	// they state.
	want := g.GetIncarnation()
	switch {
	case len(stated) > 1 || (len(stated) == 1 && want != 0 && len(stated[want]) == 0):
		var copies []string
		for _, inc := range slices.Sorted(maps.Keys(stated)) {
			copies = append(copies, fmt.Sprintf("%s state incarnation %016x", strings.Join(stated[inc], ", "), inc))
		}
		if want != 0 {
			copies = append(copies, fmt.Sprintf("the request names %016x", want))
		}
		f.bad = append(f.bad, fmt.Sprintf("group %d: two copies of the group id (%s): "+
			"a group id that left or was partly created given to other replicas", gid, strings.Join(copies, "; ")))
	case needIncarnation && len(seen) > 0 && len(silent) > 0:
		f.notReady = append(f.notReady, fmt.Sprintf("group %d: %s state no incarnation yet "+
			"(a new group has one once its first leader is elected and its replicas apply it)", gid, strings.Join(silent, ", ")))
	case len(stated) == 1:
		for inc := range stated {
			return inc
		}
	}
	return 0
}

// cause is the gRPC message of err, without its code.
func cause(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
