package group

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// allShards names every shard.
func allShards() []uint32 {
	s := make([]uint32, nShards)
	for i := range s {
		s[i] = uint32(i)
	}
	return s
}

// list runs req on r and fails the test on an error.
func (r *replica) list(req *kvpb.ListRequest) (kvs []*kvpb.KeyValue, more bool) {
	r.t.Helper()
	kvs, more, err := r.sm.List(req)
	if err != nil {
		r.t.Fatalf("list %v: %v", req, err)
	}
	return kvs, more
}

func listedKeys(kvs []*kvpb.KeyValue) []string {
	var out []string
	for _, kv := range kvs {
		out = append(out, string(kv.GetKey()))
	}
	return out
}

// TestListBoundsCursorLimitKeysOnly lists a group holding every shard
// with each of the request's bounds, and checks the keys against the
// sorted set written, their values and versions.
func TestListBoundsCursorLimitKeysOnly(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	var written []string
	for i, k := range []string{"b", "a/1", "a/2", "a/3", "a/10", "a0", "c", "ab", "a", "a/\xff", "z"} {
		if err := r.apply(put(k, "v-"+k, uint64(100+i), 1)); err != nil { // sessions are per shard: one each
			t.Fatal(err)
		}
		written = append(written, k)
	}
	if err := r.apply(appendCmd("a/2", "+", 99, 1)); err != nil { // version 2
		t.Fatal(err)
	}
	slices.Sort(written)
	shards := map[int]bool{}
	for _, k := range written {
		shards[controller.ShardOf([]byte(k), nShards)] = true
	}
	if len(shards) < 3 {
		t.Fatalf("the keys fall in %d shards: the test needs several to merge", len(shards))
	}

	kvs, more := r.list(&kvpb.ListRequest{Shards: allShards()})
	if got := listedKeys(kvs); !slices.Equal(got, written) || more {
		t.Fatalf("everything: %q more=%v, want %q", got, more, written)
	}
	for _, kv := range kvs {
		wantValue, wantVersion := "v-"+string(kv.Key), uint64(1)
		if string(kv.Key) == "a/2" {
			wantValue, wantVersion = "v-a/2+", 2
		}
		if string(kv.Value) != wantValue || kv.Version != wantVersion {
			t.Errorf("%q = %q version %d, want %q version %d", kv.Key, kv.Value, kv.Version, wantValue, wantVersion)
		}
	}

	for _, tc := range []struct {
		name string
		req  *kvpb.ListRequest
		want []string
		more bool
	}{
		{"range", &kvpb.ListRequest{Start: []byte("a/2"), End: []byte("b")}, []string{"a/2", "a/3", "a/\xff", "a0", "ab"}, false},
		{"prefix", &kvpb.ListRequest{Start: []byte("a/"), End: kvpb.PrefixEnd([]byte("a/"))}, []string{"a/1", "a/10", "a/2", "a/3", "a/\xff"}, false},
		{"cursor on a key", &kvpb.ListRequest{After: []byte("a/3")}, []string{"a/\xff", "a0", "ab", "b", "c", "z"}, false},
		{"cursor between keys", &kvpb.ListRequest{After: []byte("a/25")}, []string{"a/3", "a/\xff", "a0", "ab", "b", "c", "z"}, false},
		{"cursor below start", &kvpb.ListRequest{Start: []byte("b"), After: []byte("a")}, []string{"b", "c", "z"}, false},
		{"cursor past end", &kvpb.ListRequest{End: []byte("b"), After: []byte("b")}, nil, false},
		{"start at end", &kvpb.ListRequest{Start: []byte("b"), End: []byte("b")}, nil, false},
		{"limit", &kvpb.ListRequest{Limit: 3}, []string{"a", "a/1", "a/10"}, true},
		{"limit exactly the rest", &kvpb.ListRequest{After: []byte("b"), Limit: 2}, []string{"c", "z"}, false},
		{"bytes: the key reaching the bound ends it", &kvpb.ListRequest{MaxBytes: 8}, []string{"a", "a/1"}, true}, // 4 + 8 bytes
		{"bytes: one key at least", &kvpb.ListRequest{MaxBytes: 1}, []string{"a"}, true},
		{"some shards", &kvpb.ListRequest{Shards: []uint32{uint32(controller.ShardOf([]byte("c"), nShards))}}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.req.Shards == nil {
				tc.req.Shards = allShards()
			} else {
				for _, k := range written {
					if controller.ShardOf([]byte(k), nShards) == int(tc.req.Shards[0]) {
						tc.want = append(tc.want, k)
					}
				}
			}
			kvs, more := r.list(tc.req)
			if got := listedKeys(kvs); !slices.Equal(got, tc.want) || more != tc.more {
				t.Fatalf("%q more=%v, want %q more=%v", got, more, tc.want, tc.more)
			}
		})
	}

	kvs, _ = r.list(&kvpb.ListRequest{Shards: allShards(), KeysOnly: true})
	if got := listedKeys(kvs); !slices.Equal(got, written) {
		t.Fatalf("keys only: %q, want %q", got, written)
	}
	for _, kv := range kvs {
		if kv.Value != nil || kv.Version != 0 {
			t.Fatalf("keys only: %q came with value %q version %d", kv.Key, kv.Value, kv.Version)
		}
	}
}

// TestListPagesMatchAModel writes random keys (and deletes some) and
// lists random ranges page by page, each page after the last key of the
// one before: the pages together are exactly the model's keys of the
// range, in order, each once. The seed is random unless
// -metamorphic.seed names one (the package's one seed flag).
func TestListPagesMatchAModel(t *testing.T) {
	seed := *metaSeed
	if seed == 0 {
		seed = rand.Uint64()>>1 | 1
	}
	t.Logf("replay: go test ./group -run TestListPagesMatchAModel -metamorphic.seed=%d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	r := newReplica(t, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	model := map[string]string{}
	randKey := func() string {
		b := make([]byte, 1+rng.IntN(3))
		for i := range b {
			b[i] = "ab\x00\xff"[rng.IntN(4)]
		}
		return string(b)
	}
	for i := 1; i <= 300; i++ {
		k := randKey()
		if rng.IntN(4) == 0 {
			if err := r.apply(write(kvpb.WriteOp_WRITE_OP_DELETE, k, "", uint64(i), 1)); err != nil {
				t.Fatal(err)
			}
			delete(model, k)
			continue
		}
		v := fmt.Sprint(i)
		if err := r.apply(put(k, v, uint64(i), 1)); err != nil {
			t.Fatal(err)
		}
		model[k] = v
	}
	for round := 0; round < 200; round++ {
		start, end := randKey(), randKey()
		if rng.IntN(4) == 0 {
			start = ""
		}
		if rng.IntN(4) == 0 {
			end = ""
		}
		var want []string
		for k := range model {
			if k >= start && (end == "" || k < end) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		req := &kvpb.ListRequest{Shards: allShards(), Start: []byte(start), End: []byte(end),
			Limit: uint32(rng.IntN(5)), MaxBytes: uint64(rng.IntN(12)), KeysOnly: rng.IntN(2) == 0}
		var got []string
		for pages := 0; ; pages++ {
			if pages > len(model)+1 {
				t.Fatalf("round %d: no end after %d pages", round, pages)
			}
			kvs, more := r.list(req)
			for _, kv := range kvs {
				if !req.KeysOnly && string(kv.Value) != model[string(kv.Key)] {
					t.Fatalf("round %d: %q = %q, want %q", round, kv.Key, kv.Value, model[string(kv.Key)])
				}
			}
			got = append(got, listedKeys(kvs)...)
			if !more {
				break
			}
			if len(kvs) == 0 {
				t.Fatalf("round %d: an empty page with more", round)
			}
			req.After = kvs[len(kvs)-1].Key
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d [%q, %q) limit %d bytes %d: %q, want %q", round, start, end, req.Limit, req.MaxBytes, got, want)
		}
	}
}

// TestListRefusesShardsNotServed: a listing naming a shard the group does
// not serve at its applied state fails whole, typed as a Get would, and
// returns nothing; so does a malformed one.
func TestListRefusesShardsNotServed(t *testing.T) {
	g1, g2, c2 := twoGroups(t)
	fresh := newReplica(t, 3, Limits{})
	if _, _, err := fresh.sm.List(&kvpb.ListRequest{Shards: []uint32{0}}); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("before any configuration: %v, want ErrWrongGroup", err)
	}
	key := keyIn(2, 0)
	if err := g1.apply(put(key, "x", 7, 1)); err != nil {
		t.Fatal(err)
	}
	if kvs, _ := g1.list(&kvpb.ListRequest{Shards: []uint32{0, 2}}); len(kvs) != 1 {
		t.Fatalf("shard 2 served by group 1: %v", kvs)
	}
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(2, c2...)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		r      *replica
		shards []uint32
		want   error
	}{
		{"held by the old owner", g1, []uint32{0, 2}, kvpb.ErrWrongGroup},
		{"pulling at the new owner", g2, []uint32{2}, kvpb.ErrNotReady},
		{"never the group's", g2, []uint32{0}, kvpb.ErrWrongGroup},
		{"no shard", g1, []uint32{}, rpcerr.ErrMalformed},
		{"a shard twice", g1, []uint32{0, 0}, rpcerr.ErrMalformed},
		{"no such shard", g1, []uint32{nShards}, rpcerr.ErrMalformed},
	} {
		kvs, more, err := tc.r.sm.List(&kvpb.ListRequest{Shards: tc.shards})
		if !errors.Is(err, tc.want) || kvs != nil || more {
			t.Errorf("%s: %v (%d keys, more %v), want %v", tc.name, err, len(kvs), more, tc.want)
		}
	}
	long := bytes.Repeat([]byte("k"), DefaultMaxKeySize+1)
	if _, _, err := g1.sm.List(&kvpb.ListRequest{Shards: []uint32{0}, After: long}); !errors.Is(err, kvpb.ErrKeyTooLarge) {
		t.Errorf("a cursor above the key limit: %v, want ErrKeyTooLarge", err)
	}

	// Once the shard is in, the new owner lists it, with its version.
	if err := g1.apply(handOver(2, 2)); err != nil {
		t.Fatal(err)
	}
	chunks := g1.export(2, 2)
	if err := g2.apply(&grouppb.Command{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{
		ConfigNum: 2, Shard: 2, Kvs: chunks[0].Kvs, Sessions: chunks[0].Sessions, Last: len(chunks) == 1}}}); err != nil {
		t.Fatal(err)
	}
	kvs, _ := g2.list(&kvpb.ListRequest{Shards: []uint32{2}})
	if len(kvs) != 1 || string(kvs[0].Key) != key || kvs[0].Version != 1 {
		t.Fatalf("the moved shard at its new owner: %v", kvs)
	}
}
