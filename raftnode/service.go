package raftnode

import (
	"context"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/headerpb"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
)

// RegisterMembership serves the group's Membership service (list and
// change its members, see ChangeMembership) on g. clusterID goes in every
// reply's header.
func (n *Node) RegisterMembership(g *grpc.Server, clusterID uint64) {
	memberpb.RegisterMembershipServer(g, n.MembershipService(clusterID))
}

// MembershipService is the group's Membership service, for a server that
// dispatches requests among the replicas of several groups (a node) by
// their group. A request for another group fails with
// memberpb.ErrWrongGroup.
func (n *Node) MembershipService(clusterID uint64) memberpb.MembershipServer {
	return &membershipServer{n: n, clusterID: clusterID}
}

type membershipServer struct {
	memberpb.UnimplementedMembershipServer
	n         *Node
	clusterID uint64
}

func (s *membershipServer) checkGroup(group uint64) error {
	if group != s.n.cfg.Group {
		return fmt.Errorf("%w: replica %d is in group %d, not %d", memberpb.ErrWrongGroup, s.n.cfg.ID, s.n.cfg.Group, group)
	}
	return nil
}

// List implements memberpb.MembershipServer.
func (s *membershipServer) List(_ context.Context, req *memberpb.ListRequest) (*memberpb.ListReply, error) {
	if err := s.checkGroup(req.GetGroup()); err != nil {
		return nil, memberpb.Errors.ToStatus(err)
	}
	return s.reply(s.n.Members()), nil
}

// Change implements memberpb.MembershipServer.
func (s *membershipServer) Change(ctx context.Context, req *memberpb.ChangeRequest) (*memberpb.ListReply, error) {
	if err := s.checkGroup(req.GetGroup()); err != nil {
		return nil, memberpb.Errors.ToStatus(err)
	}
	kinds := map[memberpb.ChangeKind]ChangeKind{
		memberpb.ChangeKind_CHANGE_KIND_ADD_LEARNER: AddLearner,
		memberpb.ChangeKind_CHANGE_KIND_PROMOTE:     Promote,
		memberpb.ChangeKind_CHANGE_KIND_REMOVE:      Remove,
		memberpb.ChangeKind_CHANGE_KIND_REPLACE:     Replace,
	}
	kind, ok := kinds[req.GetKind()]
	if !ok {
		return nil, memberpb.Errors.ToStatus(fmt.Errorf("%w: kind %v", rpcerr.ErrBadMemberChange, req.GetKind()))
	}
	m, err := s.n.ChangeMembership(ctx, MemberChange{Kind: kind, ID: req.GetId(), Addr: req.GetAddr(), Old: req.GetOld()})
	if err != nil {
		return nil, memberpb.Errors.ToStatus(err)
	}
	return s.reply(m), nil
}

// reply describes m, with every member's progress when this member leads.
func (s *membershipServer) reply(m Membership) *memberpb.ListReply {
	st := s.n.rn.Status()
	out := &memberpb.ListReply{
		Header: &headerpb.ResponseHeader{ClusterId: s.clusterID, Group: s.n.cfg.Group, Replica: s.n.cfg.ID,
			Term: s.n.term.Load(), AppliedIndex: s.n.applied.Load()},
		Leader: st.Lead, Joint: m.Joint, FromLeader: st.RaftState == raft.StateLeader,
	}
	add := func(id uint64, role memberpb.Role) {
		mem := &memberpb.Member{Id: id, Addr: m.Addrs[id], Role: role}
		if pr, ok := st.Progress[id]; ok {
			mem.Match, mem.Active = pr.Match, s.n.heardRecently(id)
		}
		out.Members = append(out.Members, mem)
	}
	for _, id := range m.Voters {
		add(id, memberpb.Role_ROLE_VOTER)
	}
	for _, id := range m.Learners {
		add(id, memberpb.Role_ROLE_LEARNER)
	}
	s.n.memberMu.RLock()
	outgoing := slices.Clone(s.n.confState.GetVotersOutgoing())
	s.n.memberMu.RUnlock()
	for _, id := range outgoing {
		if !slices.Contains(m.Voters, id) {
			add(id, memberpb.Role_ROLE_OUTGOING)
		}
	}
	return out
}
