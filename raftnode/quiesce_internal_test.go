package raftnode

import (
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// TestQuiescingHeartbeatConfirmsNoRead: raft answers a heartbeat with its
// context and reads a response's first 8 bytes as a ReadIndex round; the
// quiescing marker's are zero, so its responses confirm no read, even a
// read pending at the leader when they arrive. The read's own heartbeats
// then confirm it.
func TestQuiescingHeartbeatConfirmsNoRead(t *testing.T) {
	peers := []uint64{1, 2, 3}
	nodes := map[uint64]*raft.RawNode{}
	stores := map[uint64]*raft.MemoryStorage{}
	for _, id := range peers {
		st := raft.NewMemoryStorage()
		if err := st.ApplySnapshot(&raftpb.Snapshot{Metadata: bootstrapSnapshot(peers)}); err != nil {
			t.Fatal(err)
		}
		rn, err := raft.NewRawNode(&raft.Config{ID: id, ElectionTick: 10, HeartbeatTick: 1, Storage: st,
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 16, CheckQuorum: true, PreVote: true,
			ReadOnlyOption: raft.ReadOnlySafe, Logger: raftLogger{slog.New(slog.DiscardHandler)}})
		if err != nil {
			t.Fatal(err)
		}
		nodes[id], stores[id] = rn, st
	}
	// deliver runs every member's Readys, passing messages on (those hold
	// says to keep are returned instead), until nothing moves; it returns
	// the read states the leader produced.
	deliver := func(hold func(*raftpb.Message) bool) (held []*raftpb.Message, reads []raft.ReadState) {
		for moved := true; moved; {
			moved = false
			for _, id := range peers {
				rn := nodes[id]
				if !rn.HasReady() {
					continue
				}
				moved = true
				rd := rn.Ready()
				if hs := rd.HardState; !raft.IsEmptyHardState(hs) {
					_ = stores[id].SetHardState(hs)
				}
				_ = stores[id].Append(rd.Entries)
				reads = append(reads, rd.ReadStates...)
				for _, m := range rd.Messages {
					if hold != nil && hold(m) {
						held = append(held, m)
						continue
					}
					_ = nodes[m.GetTo()].Step(m)
				}
				rn.Advance(rd)
			}
		}
		return held, reads
	}
	if err := nodes[1].Campaign(); err != nil {
		t.Fatal(err)
	}
	deliver(nil)
	if nodes[1].Status().RaftState != raft.StateLeader {
		t.Fatal("member 1 did not become leader")
	}
	term := nodes[1].Status().HardState.GetTerm()

	nodes[1].ReadIndex([]byte("read-1"))
	readBeats, reads := deliver(func(m *raftpb.Message) bool {
		return m.GetType() == raftpb.MessageType_MsgHeartbeat && len(m.GetContext()) > 0
	})
	if len(reads) > 0 || len(readBeats) != 2 {
		t.Fatalf("before any answer: %d read states, %d read heartbeats held", len(reads), len(readBeats))
	}
	for _, from := range []uint64{2, 3} {
		_ = nodes[1].Step(&raftpb.Message{Type: raftpb.MessageType_MsgHeartbeatResp.Enum(), From: new(from), To: new(uint64(1)),
			Term: new(term), Context: quiesceContext})
	}
	if _, reads := deliver(nil); len(reads) > 0 {
		t.Fatalf("quiescing heartbeat responses confirmed a read: %+v", reads)
	}
	for _, m := range readBeats {
		_ = nodes[m.GetTo()].Step(m)
	}
	if _, reads := deliver(nil); len(reads) != 1 || string(reads[0].RequestCtx) != "read-1" {
		t.Fatalf("the read's own heartbeats gave %+v, want read-1 confirmed", reads)
	}
}
