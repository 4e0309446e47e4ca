package raftnode_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// TestForwardedProposalToLeaderlessMemberIsDroppedAtOnce: a proposal
// forwarded to a member that knows no leader is dropped at once, not after
// a wait: the transport delivers every group's messages from the
// sender's process in turn, and a wait in Step would hold back all of
// them (heartbeats of the next leader included).
func TestForwardedProposalToLeaderlessMemberIsDroppedAtOnce(t *testing.T) {
	c := newCluster(t, 3, nil)
	mustAppendAll(t, c, 1, 3)
	survivor := c.peers[0]
	for _, id := range c.peers[1:] {
		c.crash(id)
	}
	if !waitFor(t, 10*time.Second, func() bool { return c.node(survivor).Status().Leader == 0 }) {
		t.Fatalf("member %d still knows leader %d with its peers down", survivor, c.node(survivor).Status().Leader)
	}
	from, to := c.peers[1], survivor
	m := &raftpb.Message{Type: raftpb.MessageType_MsgProp.Enum(), From: &from, To: &to,
		Entries: []*raftpb.Entry{{Data: []byte("forwarded")}}}
	if err := c.node(survivor).Step(context.Background(), m); !errors.Is(err, raft.ErrProposalDropped) {
		t.Fatalf("Step of a forwarded proposal without a leader: %v, want raft.ErrProposalDropped at once", err)
	}
}
