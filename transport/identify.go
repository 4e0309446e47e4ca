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
	// ClusterID is the id the server stated in its response header (see
	// CheckClusterID); 0 when it stated none.
	ClusterID uint64
	// Group and Replica are the replica's group and its raft id there.
	Group, Replica uint64
}

type identityServer struct {
	transportpb.UnimplementedReplicaServer
	group, replica uint64
}

// Identify implements transportpb.ReplicaServer.
func (s *identityServer) Identify(context.Context, *transportpb.IdentifyRequest) (*transportpb.IdentifyReply, error) {
	return &transportpb.IdentifyReply{Group: s.group, Replica: s.replica}, nil
}

// RegisterIdentity makes g answer Identify as replica id of group. Every
// replica group server registers it on its own gRPC server, so that the
// answer tells which replica an address reaches (the Raft service may be
// shared by the replicas of one process).
func RegisterIdentity(g *grpc.Server, group, id uint64) {
	transportpb.RegisterReplicaServer(g, &identityServer{group: group, replica: id})
}

// Identify asks the server at addr which replica it runs. While the server
// cannot be reached it tries again every 50 ms until ctx ends, and then
// returns the last failure to reach it (not just the context's error). A
// server of another cluster refuses a caller that states its cluster id
// (see WithClusterID and IsClusterMismatch); one that serves no replica
// group answers with codes.Unimplemented.
func Identify(ctx context.Context, addr string, dial ...grpc.DialOption) (ReplicaIdentity, error) {
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
		reply, err := cl.Identify(ctx, &transportpb.IdentifyRequest{}, grpc.Header(&header))
		if err == nil {
			id, _ := rpc.ReadClusterID(header)
			return ReplicaIdentity{ClusterID: id, Group: reply.GetGroup(), Replica: reply.GetReplica()}, nil
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
