package raftnode

import "go.etcd.io/raft/v3"

// SetRaftNode makes Start build the member's raft.Node with newRaft instead
// of startInline, so a test can run etcd raft's RawNode synchronously
// under the real Ready and apply loops and read rounds.
func SetRaftNode(c *Config, newRaft func(*raft.Config) raft.Node) { c.newRaft = newRaft }

// AppliedReaches returns a channel closed once the member's applied index
// reaches index.
func (n *Node) AppliedReaches(index uint64) <-chan struct{} {
	return n.appliedWaiter(index)
}

// HeardRecently reports whether the member heard from member id within
// an election timeout of its own ticks: what the membership checks call
// reachable.
func (n *Node) HeardRecently(id uint64) bool { return n.heardRecently(id) }

// ReadRoundInFlight reports whether a read-index round was asked of raft
// and is not over.
func (n *Node) ReadRoundInFlight() bool {
	n.reads.mu.Lock()
	defer n.reads.mu.Unlock()
	return n.reads.inFlight != nil
}
