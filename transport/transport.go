// Package transport carries Raft messages between the replicas of a group.
//
// The raft node sees Handler (its receiving side, which it implements) and
// Transport (its sending side), which a Network returns when the replica
// joins it. Optional interfaces add the rest: a Handler may implement
// Founded and MemberReporter, a Transport Quiescence, a Network Addresser
// and AddrSetter; the gRPC implementation supports them all. Production
// uses that gRPC implementation: every process runs one Server, and for
// each peer process a replica talks to, one long-lived client stream carries
// batches of messages (whatever queued up while the previous batch was in
// flight), so a busy leader pays one RPC frame per batch, not per message.
// Snapshots travel on their own stream in bounded chunks, so a large state
// never becomes one giant gRPC message and never holds up heartbeats.
//
// Tests use memnet, an in-memory network with seeded faults.
//
// Delivery is best effort, exactly as Raft expects: a message may be lost,
// delayed, duplicated or reordered, and Raft's own retries repair that. A
// peer that cannot be reached is reported through Handler.ReportUnreachable
// so the leader stops pipelining to it; a snapshot's fate is returned by
// SendSnapshot so the node can call ReportSnapshot.
package transport

import (
	"context"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// Handler is the receiving side of one replica: the raft node.
type Handler interface {
	// Step hands a message from a peer to the local Raft state machine.
	Step(ctx context.Context, m *raftpb.Message) error
	// ReportUnreachable tells Raft that a message to peer id was lost.
	ReportUnreachable(id uint64)
}

// Founded is implemented by a Handler that knows which copy of its group
// it belongs to: FoundingToken returns the copy's founding token
// (storage.FoundingTokenFor), or 0 if the replica does not know it. Two
// copies of one group id can run (a group that left keeps running; its id
// may be created again) and raft messages are addressed by group and id
// alone, so a Network stamps every message with its sender's token and
// drops one whose token is not the receiver's; 0 on either side matches
// every token (a replica that joined before tokens were kept). A Handler
// that does not implement Founded has no token.
type Founded interface {
	// FoundingToken returns the founding token of the handler's copy of
	// its group, or 0 if it does not know it.
	FoundingToken() uint64
}

// foundingToken is h's founding token, 0 if it has none.
func foundingToken(h Handler) uint64 {
	if f, ok := h.(Founded); ok {
		return f.FoundingToken()
	}
	return 0
}

// MemberReporter is implemented by handlers that can tell what they know of
// a fellow member (the raft node does); the gRPC server answers Member
// requests with it.
type MemberReporter interface {
	// MemberProgress says what this replica knows of member id.
	MemberProgress(id uint64) MemberInfo
}

// MemberInfo is what a replica knows of a fellow member.
type MemberInfo struct {
	Leader bool   // the replica asked leads its group
	Term   uint64 // its term
	// As leader: the highest log index member id acknowledged, and
	// whether id is a learner (added to the group, not yet promoted).
	Match   uint64
	Learner bool
	// Removed: the replica applied the removal of member id, which is in
	// no configuration of the group now (raftnode.Membership.WasRemoved;
	// as leader or not: a removed id never rejoins).
	Removed bool
	// FoundingToken: the answering replica's (Founded), 0 if it has none.
	FoundingToken uint64
	// Heard: the replica has heard from member id (a raft message) since
	// it was founded or joined, as it recorded on disk.
	Heard bool
}

// Transport is the sending side of one replica.
type Transport interface {
	// Send queues messages for delivery and returns at once; it never blocks
	// on the network.
	Send(msgs []*raftpb.Message)
	// SendSnapshot delivers one MsgSnap whose Snapshot.Data is filled in, and
	// returns when the peer has it or the attempt failed.
	SendSnapshot(ctx context.Context, m *raftpb.Message) error
	// Close stops delivery in both directions.
	Close() error
}

// QuiescedInterval is how often a process names its quiesced replicas to
// each peer process (Quiescence): a fifth of an election timeout at
// raftnode's defaults; raftnode's doc says how the names are read.
const QuiescedInterval = 50 * time.Millisecond

// Quiescence is implemented by transports that carry the presence of
// quiesced replicas (the gRPC transport; memnet does not, so replicas on
// it never quiesce). A quiesced replica neither ticks nor heartbeats: what
// tells its fellow members it still lives is its process naming it to
// theirs every QuiescedInterval.
type Quiescence interface {
	// SetQuiesced says whether this replica is quiesced; while it is, its
	// process names it to every peer process every QuiescedInterval.
	SetQuiesced(quiesced bool)
	// QuiescedAt returns when the process hosting member id of this
	// replica's group last named it quiesced (the zero time: never).
	QuiescedAt(id uint64) time.Time
}

// Network attaches a replica (a member id of a group) to the network: from
// then on messages for it go to h, and the returned Transport sends its own.
type Network interface {
	// Join attaches member id of group, whose messages go to h from then
	// on. It fails if that member is attached already: one handler per
	// member. The caller closes the returned Transport when done, which
	// detaches the member.
	Join(group, id uint64, h Handler) (Transport, error)
}

// AddrSetter is implemented by networks whose members' addresses can
// change at run time (GRPCNetwork): raft membership changes tell it the
// address of every member they add.
type AddrSetter interface {
	// SetAddr records that member id of group is reached at addr.
	SetAddr(group, id uint64, addr string)
}

// Addresser is implemented by networks that know the address other
// processes reach a member at (GRPCNetwork does). A replica that is not
// the leader tells clients the leader's address with it.
type Addresser interface {
	// Addr returns the address member id of group is reached at; ok is
	// false when it is not known.
	Addr(group, id uint64) (addr string, ok bool)
}
