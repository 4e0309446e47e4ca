package group

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/raftnode"
)

// FuzzApplyCommand feeds arbitrary bytes to the state machine as a log
// entry: it must never panic or fail its storage, an undecodable entry must
// answer rpcerr.ErrMalformed and change nothing, and whatever it applies must keep
// every key in the shard it hashes to.
func FuzzApplyCommand(f *testing.F) {
	for _, c := range []*grouppb.Command{
		put("k", "v", 1, 1), appendCmd("k", "v", 1, 2), write(kvpb.WriteOp_WRITE_OP_DELETE, "k", "", 1, 3),
		config(2, all(2)...), config(1<<62, all(1)...),
		{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{ConfigNum: 1, Shard: 99999, Kvs: []*grouppb.KeyValue{{Key: []byte("x")}}}}},
		{Op: &grouppb.Command_DeleteShard{DeleteShard: &grouppb.DeleteShardRequest{ConfigNum: 1 << 63, Shard: 1 << 31}}},
		{Op: &grouppb.Command_ConfirmDelete{ConfirmDelete: &grouppb.ConfirmDelete{ConfigNum: 0, Shard: 7}}},
		write(kvpb.WriteOp(99), "k", "v", 1, 9),
		{Op: &grouppb.Command_Restore{Restore: &grouppb.InsertShard{ConfigNum: 1, Shard: 2}}},
		{Op: &grouppb.Command_Restore{Restore: &grouppb.InsertShard{ConfigNum: 1, Shard: 2, Chunk: 1, Last: true, Kvs: []*grouppb.KeyValue{{Key: []byte("x")}}}}},
	} {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2]) // truncated
	}
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newReplica(t, 1, Limits{MaxKeySize: 64, MaxValueSize: 64})
		if err := r.apply(config(1, all(1)...)); err != nil {
			t.Fatal(err)
		}
		_, before, _ := r.sm.Digests()
		r.index++
		res, err := r.sm.Apply([]raftnode.Entry{{Index: r.index, Term: 1, Data: data}})
		if err != nil {
			t.Fatalf("storage failure on fuzzed entry: %v", err)
		}
		var cmd grouppb.Command
		if proto.Unmarshal(data, &cmd) != nil {
			if outcome, _ := res[0].(error); !errors.Is(outcome, rpcerr.ErrMalformed) {
				t.Fatalf("undecodable entry answered %v", res[0])
			}
			if _, after, _ := r.sm.Digests(); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatal("an undecodable entry changed the state")
			}
		}
		v := r.sm.View()
		if len(v.Shards) != nShards && len(v.Shards) != 0 {
			t.Fatalf("shard count changed to %d", len(v.Shards))
		}
	})
}
