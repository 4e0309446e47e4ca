package transport

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// TestOnlyPlainHeartbeatsWait: a heartbeat that confirms a ReadIndex (it
// carries the read's context) is sent at once, as is every message but a
// plain heartbeat or its response.
func TestOnlyPlainHeartbeatsWait(t *testing.T) {
	for _, c := range []struct {
		m    *raftpb.Message
		lazy bool
	}{
		{&raftpb.Message{Type: raftpb.MessageType_MsgHeartbeat.Enum()}, true},
		{&raftpb.Message{Type: raftpb.MessageType_MsgHeartbeatResp.Enum()}, true},
		{&raftpb.Message{Type: raftpb.MessageType_MsgHeartbeat.Enum(), Context: []byte("read")}, false},
		{&raftpb.Message{Type: raftpb.MessageType_MsgHeartbeatResp.Enum(), Context: []byte("read")}, false},
		{&raftpb.Message{Type: raftpb.MessageType_MsgApp.Enum()}, false},
		{&raftpb.Message{Type: raftpb.MessageType_MsgAppResp.Enum()}, false},
		{&raftpb.Message{Type: raftpb.MessageType_MsgVote.Enum()}, false},
		{&raftpb.Message{Type: raftpb.MessageType_MsgPreVote.Enum()}, false},
		{&raftpb.Message{Type: raftpb.MessageType_MsgTimeoutNow.Enum()}, false},
		{&raftpb.Message{Type: raftpb.MessageType_MsgReadIndex.Enum()}, false},
		{&raftpb.Message{Type: raftpb.MessageType_MsgProp.Enum()}, false},
	} {
		if got := lazy(c.m); got != c.lazy {
			t.Errorf("lazy(%v with context %q) = %v, want %v", c.m.GetType(), c.m.GetContext(), got, c.lazy)
		}
	}
}
