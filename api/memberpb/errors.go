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

// The refusals of Node.Host. Each changes nothing.
var (
	// ErrNotAdded: the group's leader does not have the replica as a
	// learner that has yet to acknowledge anything: add it first (`admin
	// member add`), or it is a member that already ran elsewhere.
	ErrNotAdded = Errors.New(codes.FailedPrecondition, "NOT_ADDED", "member: the replica is not a new learner of its group (add it first)")
	// ErrHostsOtherReplica: the node hosts another replica of the group; a
	// node hosts one replica of a group (two would fail together).
	ErrHostsOtherReplica = Errors.New(codes.AlreadyExists, "HOSTS_OTHER_REPLICA", "member: the node hosts another replica of the group")
	// ErrNotThisNode: the members given put the replica at an address
	// that is not the node's.
	ErrNotThisNode = Errors.New(codes.InvalidArgument, "NOT_THIS_NODE", "member: the replica's address is not this node's")
	// ErrDroppedHere: the node dropped this very replica (group and id)
	// once (Node.Unhost). The copy of the group it belonged to may still
	// run elsewhere and address the id at this node: a new replica under
	// it would receive that copy's raft messages. Host it under another
	// id, or on another node.
	ErrDroppedHere = Errors.New(codes.FailedPrecondition, "DROPPED_HERE", "member: this node dropped that replica once (host it under another id)")
)

// ErrGroupExists: Node.Host was asked to create a group that exists (the
// controller's configuration has it, or a member already holds the
// replica's acknowledgements): add replicas to it with `admin member add`.
var ErrGroupExists = Errors.New(codes.AlreadyExists, "GROUP_EXISTS", "member: the group exists already (add replicas to it with member add)")

// ErrStillMember: Node.Unhost was asked to drop a replica its group may
// still need: a member of a group the controller's configuration has, or
// one that still holds shards. Remove it from its group first (`admin
// member remove`), or let the group leave and hand its shards over.
var ErrStillMember = Errors.New(codes.FailedPrecondition, "STILL_MEMBER", "member: the replica is still a member of a group in the configuration")

// ErrGroupUnreachable: Node.Host could not ask what it must before hosting
// a replica (no leader of the group answered, or a founder's node did
// not), or Node.Unhost could not read the controller's configuration;
// nothing was recorded. Retry once they answer.
var ErrGroupUnreachable = Errors.New(codes.Unavailable, "GROUP_UNREACHABLE", "member: the group's leader or a founder's node did not answer (try again)")
