package transport

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/transportpb"
	"github.com/shardkv/shardkv/internal/rpc"
)

// ReplicaIdentity is what a replica group server says of itself (Identify).
type ReplicaIdentity struct {
	// ClusterID is the id the server stated in its response header; 0
	// when it stated none.
	ClusterID uint64
	// Group and Replica are the replica's group and its raft id there.
	Group, Replica uint64
	// Incarnation is the group's incarnation as the replica applied it
	// (controllerpb.Group.incarnation); 0 while it has applied none.
	Incarnation uint64
}

// Hosted is a replica a process hosts, as Identify states it.
type Hosted struct {
	Replica     uint64 // its raft id
	Incarnation uint64 // its group's incarnation as applied, 0 for none yet
}

type identityServer struct {
	transportpb.UnimplementedReplicaServer
	hosted func() map[uint64]Hosted
}

// Identify implements transportpb.ReplicaServer: the replica of the group
// asked for, or (a caller that names none, or a group not hosted here) the
// process's only replica; group 0 when neither exists.
func (s *identityServer) Identify(_ context.Context, req *transportpb.IdentifyRequest) (*transportpb.IdentifyReply, error) {
	hosted := s.hosted()
	if h, ok := hosted[req.GetGroup()]; ok {
		return &transportpb.IdentifyReply{Group: req.GetGroup(), Replica: h.Replica, Incarnation: h.Incarnation}, nil
	}
	if len(hosted) == 1 {
		for g, h := range hosted {
			return &transportpb.IdentifyReply{Group: g, Replica: h.Replica, Incarnation: h.Incarnation}, nil
		}
	}
	return &transportpb.IdentifyReply{}, nil
}

// RegisterIdentity makes g answer Identify with the replicas hosted
// reports (by group id), read at every call: a process (a node) may
// host replicas of several groups, and the answer tells which replica of
// the asked group an address reaches.
func RegisterIdentity(g grpc.ServiceRegistrar, hosted func() map[uint64]Hosted) {
	transportpb.RegisterReplicaServer(g, &identityServer{hosted: hosted})
}

// Identify asks the server at addr which replica of group it runs (0: its
// only one); a server hosting no replica of group names its only replica
// if it has exactly one, and group 0 otherwise. While the server
// cannot be reached it tries again every 50 ms until ctx ends, and then
// returns the last failure to reach it (not just the context's error). A
// server of another cluster refuses a caller dialled with the cluster id
// option of internal/rpc (as this module's binaries dial) with a
// cluster-mismatch error; one that serves no replica group answers with
// codes.Unimplemented.
func Identify(ctx context.Context, addr string, group uint64, dial ...grpc.DialOption) (ReplicaIdentity, error) {
	if len(dial) == 0 {
		dial = rpc.DialOptions()
	}
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return ReplicaIdentity{}, err
	}
	defer conn.Close()
	cl := transportpb.NewReplicaClient(conn)
	var unreachable error
	for {
		var header metadata.MD
		reply, err := cl.Identify(ctx, &transportpb.IdentifyRequest{Group: group}, grpc.Header(&header))
		if err == nil {
			id, _ := rpc.ReadClusterID(header)
			return ReplicaIdentity{ClusterID: id, Group: reply.GetGroup(), Replica: reply.GetReplica(), Incarnation: reply.GetIncarnation()}, nil
		}
		if status.Code(err) == codes.Unavailable {
			unreachable = err
		} else if ctx.Err() == nil || unreachable == nil {
			return ReplicaIdentity{}, err
		}
		select {
		case <-ctx.Done():
			return ReplicaIdentity{}, unreachable
		case <-time.After(50 * time.Millisecond):
		}
	}
}
