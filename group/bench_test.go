package group

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/headerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/raftnode"
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

// batchReplica returns a replica serving every shard, with sessions
// 1..sessions open in shard 0, and 1,000 keys of shard 0.
func batchReplica(b *testing.B, sessions int) (*replica, [][]byte) {
	r := newReplica(b, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		b.Fatal(err)
	}
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte(keyIn(0, i))
	}
	for c := range uint64(sessions) {
		if err := r.applyEntry(write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, string(keys[0]), "", c+1, 0)); err != nil {
			b.Fatal(err)
		}
	}
	return r, keys
}

// applyBatch encodes ws as the next entry, applies it and returns each
// write's outcome.
func (r *replica) applyBatch(b *testing.B, ws []*kvpb.WriteRequest) []any {
	r.index++
	data, err := proto.Marshal(&grouppb.Command{Stamp: r.stamp, Op: &grouppb.Command_Writes{Writes: &grouppb.WriteBatch{Writes: ws}}})
	if err != nil {
		b.Fatal(err)
	}
	res, err := r.sm.Apply([]raftnode.Entry{{Index: r.index, Term: 1, Data: data}})
	if err != nil {
		b.Fatal(err)
	}
	outs, ok := res[0].([]any)
	if !ok || len(outs) != len(ws) {
		b.Fatalf("outcome %v", res[0])
	}
	return outs
}

// BenchmarkApplyWriteBatch: Apply of one entry holding a batch of 64 puts
// of 64 sessions (what a busy leader proposes, see grouppb.WriteBatch), on
// 1,000 keys of one shard with 100-byte values. Reported per write.
func BenchmarkApplyWriteBatch(b *testing.B) {
	const batch = 64
	r, keys := batchReplica(b, batch)
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		ws := make([]*kvpb.WriteRequest, batch)
		for c := range ws {
			ws[c] = &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: keys[(int(seq)*batch+c)%len(keys)], Value: benchValue, ClientId: uint64(c) + 1, Seq: seq}
		}
		r.applyBatch(b, ws)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/write")
}

// BenchmarkSessionLookup: the duplicate-table lookup every write does,
// from the in-memory cache (hit) and from Pebble (miss: the cache is
// emptied around commands other than writes).
func BenchmarkSessionLookup(b *testing.B) {
	r := newReplica(b, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		b.Fatal(err)
	}
	key := keyIn(0, 0)
	if err := r.apply(put(key, "v", 7, 1)); err != nil {
		b.Fatal(err)
	}
	for _, hit := range []bool{true, false} {
		b.Run(map[bool]string{true: "cached", false: "stored"}[hit], func(b *testing.B) {
			a := &apply{b: r.sm.db.NewIndexedBatch()}
			defer a.b.Close()
			b.ReportAllocs()
			for b.Loop() {
				if !hit {
					r.sm.forgetSessions()
				}
				if rec, found, err := r.sm.session(a, 0, 7); err != nil || !found {
					b.Fatalf("session: %v %v %v", rec, found, err)
				}
			}
		})
	}
}

// BenchmarkEncodeWriteBatch: the leader's encoding of a proposal of 64
// puts (proto.Marshal of the log command). Reported per write.
func BenchmarkEncodeWriteBatch(b *testing.B) {
	const batch = 64
	ws := make([]*kvpb.WriteRequest, batch)
	for c := range ws {
		ws[c] = &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte(keyIn(0, c)), Value: benchValue, ClientId: uint64(c) + 1, Seq: 12345}
	}
	cmd := &grouppb.Command{Stamp: 1_700_000_000_000, Op: &grouppb.Command_Writes{Writes: &grouppb.WriteBatch{Writes: ws}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := proto.Marshal(cmd); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/write")
}

// BenchmarkWritePath: the leader's per-write work for a batch of 64 puts
// of 64 sessions, as far as it runs in one process without raft: each
// request decoded from its wire form (what gRPC hands the server), the
// batch encoded as one log command, applied, and each reply encoded (what
// gRPC sends back). Reported per write.
func BenchmarkWritePath(b *testing.B) {
	const batch = 64
	r, keys := batchReplica(b, batch)
	wire := make([][]byte, batch) // request c's encoding at the current seq
	seq := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		b.StopTimer()
		for c := range wire {
			var err error
			wire[c], err = proto.Marshal(&kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: keys[(int(seq)*batch+c)%len(keys)],
				Value: benchValue, ClientId: uint64(c) + 1, Seq: seq})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		ws := make([]*kvpb.WriteRequest, batch)
		for c := range ws {
			ws[c] = &kvpb.WriteRequest{}
			if err := proto.Unmarshal(wire[c], ws[c]); err != nil {
				b.Fatal(err)
			}
		}
		for _, o := range r.applyBatch(b, ws) {
			wr, ok := o.(*WriteResult)
			if !ok || !wr.Succeeded {
				b.Fatalf("outcome %v", o)
			}
			reply := &kvpb.WriteReply{Header: &headerpb.ResponseHeader{ClusterId: 1, Group: 1, Replica: 1, Term: 1, AppliedIndex: r.index, ConfigNum: 1},
				Succeeded: wr.Succeeded, Version: wr.Version}
			if _, err := proto.Marshal(reply); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/write")
}
