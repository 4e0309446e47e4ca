package memberpb

import (
	"google.golang.org/grpc/codes"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// Errors is the wire table of the Membership service: the raft errors
// (NOT_LEADER with the leader's address, and the refusals of a change,
// rpcerr.ErrMembershipChangeInProgress and the others) and ErrWrongGroup.
var Errors = rpcerr.NewTable("shardkv.member.v1", rpcerr.Raft, rpcerr.Auth)

// ErrWrongGroup: the replica asked is not a member of the group the
// request names.
var ErrWrongGroup = Errors.New(codes.InvalidArgument, "WRONG_GROUP", "member: the replica is not in that group")
