package storage

import (
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// BenchmarkRaftLogAppend: a leader's append of one Ready: one entry of
// 8 KiB (a batch of 64 puts of 100-byte values) and the hard state, not
// synced (the fsync is the disk's cost, not the CPU's this measures).
func BenchmarkRaftLogAppend(b *testing.B) {
	e, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	l := e.RaftLog(Replica{Group: 1, ID: 1})
	if _, err := l.Load(); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 8<<10)
	ent := &raftpb.Entry{Term: proto.Uint64(1), Type: raftpb.EntryNormal.Enum(), Data: data}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(1)}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	index := uint64(0)
	for b.Loop() {
		index++
		ent.Index = proto.Uint64(index)
		hs.Commit = proto.Uint64(index - 1)
		if err := l.Append(hs, []*raftpb.Entry{ent}, nil, false); err != nil {
			b.Fatal(err)
		}
	}
}
