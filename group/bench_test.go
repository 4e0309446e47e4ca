package group

import (
	"testing"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// benchApply measures Apply of one write entry at a time (as a lightly
// loaded leader applies them): the write made by w(seq), on 1,000 keys of
// one session, with 100-byte values; each answers succeeds.
func benchApply(b *testing.B, succeeds bool, w func(key []byte, seq uint64) *kvpb.WriteRequest) {
	r := newReplica(b, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		b.Fatal(err)
	}
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte(keyIn(0, i)) // one shard: one session
	}
	if err := r.applyEntry(write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, string(keys[0]), "", 1, 0)); err != nil {
		b.Fatal(err)
	}
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		res, err := r.applyWrite(&grouppb.Command{Op: &grouppb.Command_Write{Write: w(keys[seq%uint64(len(keys))], seq)}})
		if err != nil || res.Succeeded != succeeds {
			b.Fatalf("write %d: %+v, %v", seq, res, err)
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
