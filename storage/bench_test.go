package storage

import (
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// BenchmarkRaftLogAppend: a leader's append of one Ready: one entry of
// 8 KiB (a batch of 64 puts of 100-byte values) and the hard state, not
// synced (the fsync is the disk's cost, not the CPU's this measures). The
// log is compacted every 1,000 entries, as a replica's is by threshold.
func BenchmarkRaftLogAppend(b *testing.B) {
	e := openEngine(b, b.TempDir(), Options{Logger: slog.New(slog.DiscardHandler)})
	defer e.Close()
	l := e.RaftLog(Replica{Group: 1, ID: 1})
	if _, err := l.Load(); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 8<<10)
	ent := &raftpb.Entry{Term: proto.Uint64(1), Type: raftpb.EntryNormal.Enum(), Data: data, Index: new(uint64)}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Vote: proto.Uint64(1), Commit: new(uint64)}
	ents := []*raftpb.Entry{ent}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		*ent.Index++
		*hs.Commit = *ent.Index - 1
		if err := l.Append(hs, ents, nil, false); err != nil {
			b.Fatal(err)
		}
		if *ent.Index%1000 == 0 {
			if err := l.Compact(&raftpb.SnapshotMetadata{Index: proto.Uint64(*ent.Index), Term: proto.Uint64(1)}, *ent.Index); err != nil {
				b.Fatal(err)
			}
		}
	}
}
