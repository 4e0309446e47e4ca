package cluster_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/internal/rpc"
)

// TestBatchServesEachOpAsItsOwnCall: a KV.Batch to a node serves each op
// as the Get or Write it stands for, routed by its own group: one op's
// failure (a group the node does not host, a malformed op) is that op's
// result alone.
func TestBatchServesEachOpAsItsOwnCall(t *testing.T) {
	h := start(t, cluster.Options{Groups: 2, Nodes: 3})
	h.join(1, 2)
	h.waitSettled()
	cl := h.client() // batched too
	h.put(cl, "k", "v")
	gid := h.ownerOf(cl, "k")
	addr, _ := h.c.Node(0)
	conn, err := grpc.NewClient(addr, rpc.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	get := func(gid uint64) *kvpb.BatchOp {
		return &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: []byte("k"), Group: gid}}}
	}
	open := &kvpb.BatchOp{Op: &kvpb.BatchOp_Write{Write: &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_OPEN_SESSION,
		Key: []byte("k"), ClientId: 77, Group: gid}}}
	reply, err := kvpb.NewKVClient(conn).Batch(h.ctx, &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{
		get(gid), get(99), {}, open, {Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: []byte("k"), Group: gid}}, TimeoutMs: 10_000},
	}}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	res := reply.GetResults()
	if len(res) != 5 {
		t.Fatalf("%d results for 5 ops", len(res))
	}
	for _, i := range []int{0, 4} {
		if g := res[i].GetGet(); res[i].Err() != nil || string(g.GetValue()) != "v" || g.GetVersion() != 1 {
			t.Errorf("op %d, a get: %v %v, want v at version 1", i, g, res[i].Err())
		}
	}
	if err := res[1].Err(); !errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrWrongGroup) {
		t.Errorf("a get for a group the node does not host: %v, want WRONG_GROUP", err)
	}
	if err := res[2].Err(); !errors.Is(kvpb.Errors.FromStatus(err), rpcerr.ErrMalformed) {
		t.Errorf("an op that is neither a get nor a write: %v, want MALFORMED", err)
	}
	if res[3].Err() != nil || res[3].GetWrite() == nil {
		t.Errorf("opening a session: %v", res[3].Err())
	}
	// Writes of both groups, a write for a group the node does not host
	// and one with a key too large, in one batch: the writes are queued
	// by the handler itself, each still answered as its own call.
	k2 := ""
	for i := 0; k2 == ""; i++ {
		if c := fmt.Sprintf("o%d", i); h.ownerOf(cl, c) != gid {
			k2 = c
		}
	}
	put := func(key string, g uint64, value string) *kvpb.BatchOp {
		return &kvpb.BatchOp{Op: &kvpb.BatchOp_Write{Write: &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT,
			Key: []byte(key), Value: []byte(value), Group: g}}}
	}
	reply, err = kvpb.NewKVClient(conn).Batch(h.ctx, &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{
		put("k", gid, "v2"), get(gid), put(k2, h.ownerOf(cl, k2), "v3"), put("k", 99, "x"),
		put(strings.Repeat("k", kvpb.DefaultMaxKeySize+1), gid, "x"), {Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: []byte(k2), Group: h.ownerOf(cl, k2)}}},
		{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: []byte("k"), Group: gid}}, TimeoutMs: 10_000},
	}}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	res = reply.GetResults()
	for _, i := range []int{0, 2} {
		if w := res[i].GetWrite(); res[i].Err() != nil || !w.GetSucceeded() {
			t.Errorf("op %d, a put: %v %v", i, w, res[i].Err())
		}
	}
	for _, i := range []int{1, 5, 6} { // gets of both groups, among writes, with and without deadlines
		if res[i].Err() != nil {
			t.Errorf("op %d, a get among writes: %v", i, res[i].Err())
		}
	}
	if err := res[3].Err(); !errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrWrongGroup) {
		t.Errorf("a write for a group the node does not host: %v, want WRONG_GROUP", err)
	}
	if res[4].Err() == nil {
		t.Errorf("a write with a key of %d bytes succeeded", kvpb.DefaultMaxKeySize+1)
	}
	h.check(cl, "k", "v2")
	h.check(cl, k2, "v3")
	// Gets of one group sharing a read index, every one with a deadline:
	// one with a key too large fails alone.
	bounded := func(key string) *kvpb.BatchOp {
		return &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: []byte(key), Group: gid}}, TimeoutMs: 10_000}
	}
	reply, err = kvpb.NewKVClient(conn).Batch(h.ctx, &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{
		bounded("k"), bounded(strings.Repeat("k", kvpb.DefaultMaxKeySize+1)), bounded("k"),
	}}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	res = reply.GetResults()
	for _, i := range []int{0, 2} {
		if g := res[i].GetGet(); res[i].Err() != nil || string(g.GetValue()) != "v2" {
			t.Errorf("op %d, a get beside a refused one: %v %v, want v2", i, g, res[i].Err())
		}
	}
	if res[1].Err() == nil {
		t.Errorf("a get with a key of %d bytes succeeded", kvpb.DefaultMaxKeySize+1)
	}
	// A batch larger than the limit is refused whole.
	big := &kvpb.BatchRequest{}
	for range kvpb.MaxBatchOps + 1 {
		big.Ops = append(big.Ops, get(gid))
	}
	if _, err := kvpb.NewKVClient(conn).Batch(h.ctx, big); !errors.Is(kvpb.Errors.FromStatus(err), rpcerr.ErrMalformed) {
		t.Errorf("a batch of %d ops: %v, want MALFORMED", len(big.Ops), err)
	}
}
