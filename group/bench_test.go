package group

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// benchApply measures Apply of one write entry at a time (as a lightly
// loaded leader applies them): the write made by w(seq), on 1,000 keys of
// one session, with 100-byte values.
func benchApply(b *testing.B, succeeds bool, w func(key []byte, seq uint64) *kvpb.WriteRequest) {
	e, err := storage.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	sm, err := Open(e, storage.Replica{Group: 1, ID: 1}, Limits{})
	if err != nil {
		b.Fatal(err)
	}
	index := uint64(0)
	apply := func(cmd *grouppb.Command) any {
		index++
		cmd.Stamp = 1
		data, err := proto.Marshal(cmd)
		if err != nil {
			b.Fatal(err)
		}
		res, err := sm.Apply([]raftnode.Entry{{Index: index, Term: 1, Data: data}})
		if err != nil {
			b.Fatal(err)
		}
		if err, ok := res[0].(error); ok {
			b.Fatal(err)
		}
		return res[0]
	}
	apply(config(1, all(1)...))
	apply(write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, keyIn(0, 0), "", 1, 0))
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte(keyIn(0, i)) // one shard: the session is opened there
	}
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		res := apply(&grouppb.Command{Op: &grouppb.Command_Write{Write: w(keys[seq%uint64(len(keys))], seq)}})
		if res.(*WriteResult).Succeeded != succeeds {
			b.Fatalf("write %d: %+v", seq, res)
		}
	}
}

var benchValue = make([]byte, 100)

// BenchmarkApplyPut: a plain put.
func BenchmarkApplyPut(b *testing.B) {
	benchApply(b, true, func(key []byte, seq uint64) *kvpb.WriteRequest {
		return &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: key, Value: benchValue, ClientId: 1, Seq: seq}
	})
}

// BenchmarkApplyCASPut: a put if the version is the one the previous
// write of the key left (every one holds).
func BenchmarkApplyCASPut(b *testing.B) {
	benchApply(b, true, func(key []byte, seq uint64) *kvpb.WriteRequest {
		v := (seq - 1) / 1000 // writes of this key so far
		return &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: key, Value: benchValue, ClientId: 1, Seq: seq, IfVersion: &v}
	})
}

// BenchmarkApplyCASPutFails: a put whose version condition never holds.
func BenchmarkApplyCASPutFails(b *testing.B) {
	stale := uint64(1 << 40)
	benchApply(b, false, func(key []byte, seq uint64) *kvpb.WriteRequest {
		return &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: key, Value: benchValue, ClientId: 1, Seq: seq, IfVersion: &stale}
	})
}
