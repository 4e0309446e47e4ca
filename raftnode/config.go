package raftnode

import (
	"cmp"
	"errors"
	"log/slog"
	"time"

	"go.etcd.io/raft/v3"

	"github.com/shardkv/shardkv/storage"
	"github.com/shardkv/shardkv/transport"
)

// Config describes one member of one Raft group. The zero values of the
// tuning fields select the defaults documented on each field.
type Config struct {
	// Group and ID name this member; ID is its Raft id within the group.
	Group, ID uint64
	// Peers lists the Raft ids of every member, this one included. It is
	// used only when the group is created: a restarted member reads its
	// membership from disk.
	Peers []uint64
	// Join starts a member that was added to an existing group (a
	// learner, see Node.ChangeMembership) with empty storage: it does not
	// bootstrap the group from Peers, and learns everything from the
	// leader. Ignored when the member has stored state.
	Join bool
	// ForceNewCluster makes this member, at start, the only voter of its
	// group (etcd's --force-new-cluster), for a group that lost its quorum
	// for good. It may lose writes only the lost members had. Start it
	// once so, then normally; add replicas back with ChangeMembership.
	ForceNewCluster bool

	// Engine stores the member's Raft log and state. Required.
	Engine *storage.Engine
	// Network connects the member to the others. Required.
	Network transport.Network
	// StateMachine applies the committed entries. Required.
	StateMachine StateMachine
	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// TickInterval is the length of one Raft tick (default 10ms). It also
	// sets how long a read-index request waits before it is asked again
	// (two election timeouts), even when Ticks drives the clock.
	TickInterval time.Duration
	// Ticks, if not nil, is the member's clock: every value received is one
	// Raft tick, and TickInterval no longer paces ticks. Nil (what
	// production uses) means a ticker every TickInterval. Tests inject
	// ticks here to decide exactly when elections and heartbeats happen.
	Ticks <-chan time.Time
	// HeartbeatTicks is the heartbeat period in ticks (default 5: 50 ms).
	HeartbeatTicks int
	// ElectionTicks is the election timeout in ticks (default 25: 250 ms; Raft
	// randomises it between 1x and 2x).
	ElectionTicks int
	// SnapshotEntries is how many applied entries trigger a snapshot and log
	// compaction (default 10000).
	SnapshotEntries uint64
	// SnapshotBytes is how many bytes of applied entries trigger a snapshot
	// and log compaction, whichever of it and SnapshotEntries comes first
	// (default 64 MiB).
	SnapshotBytes uint64
	// CatchUpEntries is how many entries below the snapshot index stay in
	// the log for followers that are only slightly behind (default 1000).
	CatchUpEntries uint64
	// MaxSizePerMsg bounds the entries in one append message (default 1 MiB).
	MaxSizePerMsg uint64
	// MaxInflightMsgs bounds the append messages in flight to one follower
	// (default 256).
	MaxInflightMsgs int
	// MaxInflightBytes bounds the entry bytes in flight to one follower
	// (default 16 MiB; never below MaxSizePerMsg): a group catching up a
	// follower that lagged puts no more than that in the transport's
	// queue to the follower's process, which every group hosted there
	// shares with its heartbeats and votes.
	MaxInflightBytes uint64

	// newRaft, if set (by tests only, see export_test.go), builds the
	// raft.Node in place of startInline.
	newRaft func(*raft.Config) raft.Node
}

func (c *Config) withDefaults() (Config, error) {
	cc := *c
	if cc.ID == 0 {
		return cc, errors.New("raftnode: member id 0 is reserved")
	}
	if cc.Engine == nil || cc.Network == nil || cc.StateMachine == nil {
		return cc, errors.New("raftnode: Engine, Network and StateMachine are required")
	}
	cc.Logger = cmp.Or(cc.Logger, slog.Default())
	cc.TickInterval = cmp.Or(cc.TickInterval, 10*time.Millisecond)
	cc.HeartbeatTicks = cmp.Or(cc.HeartbeatTicks, 5)
	cc.ElectionTicks = cmp.Or(cc.ElectionTicks, 25)
	cc.SnapshotEntries = cmp.Or(cc.SnapshotEntries, 10000)
	cc.SnapshotBytes = cmp.Or(cc.SnapshotBytes, 64<<20)
	cc.CatchUpEntries = cmp.Or(cc.CatchUpEntries, 1000)
	if cc.CatchUpEntries > cc.SnapshotEntries {
		cc.CatchUpEntries = cc.SnapshotEntries
	}
	cc.MaxSizePerMsg = cmp.Or(cc.MaxSizePerMsg, 1<<20)
	cc.MaxInflightMsgs = cmp.Or(cc.MaxInflightMsgs, 256)
	// raft refuses a window smaller than one message.
	cc.MaxInflightBytes = max(cmp.Or(cc.MaxInflightBytes, 16<<20), cc.MaxSizePerMsg)
	return cc, nil
}
