package group

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// cond returns cmd with a condition and return_value set.
func cond(cmd *grouppb.Command, ifVersion *uint64, ifValue []byte) *grouppb.Command {
	w := cmd.GetWrite()
	w.IfVersion, w.IfValue, w.ReturnValue = ifVersion, ifValue, true
	return cmd
}

func version(n uint64) *uint64 { return &n }

// answer applies a write and returns its result, failing on an error.
func (r *replica) answer(cmd *grouppb.Command) WriteResult {
	r.t.Helper()
	if w := cmd.GetWrite(); w.GetSeq() == 1 {
		open := write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, string(w.GetKey()), "", w.GetClientId(), 0)
		if err := r.applyEntry(open); err != nil {
			r.t.Fatal(err)
		}
	}
	res, err := r.applyWrite(cmd)
	if err != nil || res == nil {
		r.t.Fatalf("%v: %v, %v", cmd, res, err)
	}
	return *res
}

// restored returns a new replica of r's group restored from r's snapshot.
func (r *replica) restored() *replica {
	r.t.Helper()
	img, err := r.sm.Snapshot()
	if err != nil {
		r.t.Fatal(err)
	}
	other := newReplica(r.t, r.sm.gid, Limits{})
	if err := other.sm.Restore(img); err != nil {
		r.t.Fatal(err)
	}
	other.index = r.index
	return other
}

func (r *replica) version(key string) uint64 {
	r.t.Helper()
	_, v, err := r.sm.Get([]byte(key))
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// TestVersions: etcd's per-key version: 1 at creation, +1 per put or
// append, gone with a delete, 1 again after it.
func TestVersions(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		cmd  *grouppb.Command
		want uint64
	}{
		{put("k", "a", 1, 1), 1},
		{appendCmd("k", "b", 1, 2), 2},
		{put("k", "c", 1, 3), 3},
		{write(kvpb.WriteOp_WRITE_OP_DELETE, "k", "", 1, 4), 0},
		{write(kvpb.WriteOp_WRITE_OP_DELETE, "k", "", 1, 5), 0},
		{appendCmd("k", "d", 1, 6), 1},
		{put("k", "e", 1, 7), 2},
	} {
		if res := r.answer(tc.cmd); !res.Succeeded || res.Version != tc.want || res.ValueReturned {
			t.Fatalf("write %d: %+v, want version %d", i, res, tc.want)
		}
		if v := r.version("k"); v != tc.want {
			t.Fatalf("write %d: get says version %d, want %d", i, v, tc.want)
		}
	}
}

// TestConditionalWrites: a condition that holds applies the write, one
// that does not is an answer (not an error) that changes nothing; bad
// conditions are malformed and change nothing either.
func TestConditionalWrites(t *testing.T) {
	r := newReplica(t, 1, Limits{MaxValueSize: 8})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	del := func(seq uint64) *grouppb.Command { return write(kvpb.WriteOp_WRITE_OP_DELETE, "k", "", 1, seq) }
	for i, tc := range []struct {
		cmd       *grouppb.Command
		succeeded bool
		version   uint64
		value     string
	}{
		{cond(put("k", "a", 1, 1), version(1), nil), false, 0, ""}, // absent: version 0
		{cond(put("k", "a", 1, 2), nil, []byte("")), false, 0, ""}, // absent: no value to equal
		{cond(put("k", "a", 1, 3), version(0), nil), true, 1, "a"},
		{cond(put("k", "b", 1, 4), version(0), nil), false, 1, "a"},
		{cond(appendCmd("k", "b", 1, 5), version(1), nil), true, 2, "ab"},
		{cond(put("k", "c", 1, 6), nil, []byte("a")), false, 2, "ab"},
		{cond(put("k", "c", 1, 7), nil, []byte("ab")), true, 3, "c"},
		// A condition that does not hold fails nothing: this append
		// would be past the limit.
		{cond(appendCmd("k", "12345678", 1, 8), version(2), nil), false, 3, "c"},
		{nil, false, 0, ""}, // seq 9: that append where the condition holds
		{cond(del(10), version(2), nil), false, 3, "c"},
		{cond(del(11), nil, []byte("c")), true, 0, ""},
		{cond(del(12), version(0), nil), true, 0, ""},
	} {
		if tc.cmd == nil {
			if err := r.apply(cond(appendCmd("k", "12345678", 1, 9), version(3), nil)); !errors.Is(err, kvpb.ErrValueTooLarge) {
				t.Fatalf("an append past the limit whose condition holds: %v", err)
			}
			continue
		}
		res := r.answer(tc.cmd)
		if res.Succeeded != tc.succeeded || res.Version != tc.version || !res.ValueReturned || string(res.Value) != tc.value {
			t.Fatalf("write %d: %+v, want succeeded %v version %d value %q", i, res, tc.succeeded, tc.version, tc.value)
		}
		if v := r.version("k"); v != tc.version {
			t.Fatalf("write %d: get says version %d, want %d", i, v, tc.version)
		}
	}

	// Malformed: both conditions, a condition on an opening, an if_value
	// past the limit. Nothing is recorded: the sequence stays free.
	for _, bad := range []*grouppb.Command{
		cond(put("k", "x", 1, 13), version(0), []byte("")),
		cond(write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, "k", "", 2, 0), version(0), nil),
		cond(put("k", "x", 1, 13), nil, []byte("123456789")),
	} {
		want := rpcerr.ErrMalformed
		if len(bad.GetWrite().GetIfValue()) > 8 {
			want = kvpb.ErrValueTooLarge
		}
		if err := r.applyEntry(bad); !errors.Is(err, want) {
			t.Fatalf("%v: %v, want %v", bad, err, want)
		}
	}
	if _, ok, _ := r.sm.session(&apply{b: r.sm.db.NewIndexedBatch()}, r.sm.shardOf([]byte("k")), 2); ok {
		t.Fatal("an opening with a condition opened the session")
	}
	if res := r.answer(put("k", "x", 1, 13)); !res.Succeeded || res.Version != 1 {
		t.Fatalf("the sequence number of a malformed write: %+v", res)
	}
}

// TestRetriedConditionalWriteGetsSameAnswer: a retry (same session and
// sequence) of a conditional write gets the answer recorded the first
// time, even after the key changed so that the condition now reads
// otherwise; the value is not returned again.
func TestRetriedConditionalWriteGetsSameAnswer(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	first := r.answer(cond(put("k", "a", 7, 1), version(0), nil))
	if !first.Succeeded || first.Version != 1 {
		t.Fatalf("first: %+v", first)
	}
	failed := r.answer(cond(put("k", "b", 8, 1), version(2), nil))
	if failed.Succeeded || failed.Version != 1 {
		t.Fatalf("a condition on a later version: %+v", failed)
	}
	// Another client moves the key on: version 2, then 3.
	r.answer(put("k", "c", 9, 1))
	r.answer(put("k", "d", 9, 2))
	for _, tc := range []struct {
		cmd  *grouppb.Command
		want WriteResult
	}{
		// Would now fail (the key exists): still succeeded, version 1.
		{cond(put("k", "a", 7, 1), version(0), nil), WriteResult{Succeeded: true, Version: 1}},
		// Would fail on version 2 still: failed at version 1.
		{cond(put("k", "b", 8, 1), version(2), nil), WriteResult{Succeeded: false, Version: 1}},
	} {
		res, err := r.applyWrite(tc.cmd)
		if err != nil || res.Succeeded != tc.want.Succeeded || res.Version != tc.want.Version || res.ValueReturned || res.Value != nil {
			t.Fatalf("retry of %v: %+v %v, want %+v", tc.cmd, res, err, tc.want)
		}
	}
	if v, _ := r.get("k"); v != "d" || r.version("k") != 3 {
		t.Fatalf("a retry changed the key: %q version %d", v, r.version("k"))
	}
	// The answer is in the session record, so it survives a snapshot (and
	// a handoff, which moves the same records) and the session cache.
	other := r.restored()
	if res, err := other.applyWrite(cond(put("k", "b", 8, 1), version(2), nil)); err != nil || res.Succeeded || res.Version != 1 {
		t.Fatalf("retry after a restore: %+v %v", res, err)
	}
}

// TestVersionsMoveWithTheShard: a handoff and a snapshot carry versions;
// the next write increments them.
func TestVersionsMoveWithTheShard(t *testing.T) {
	g1, g2, c2 := twoGroups(t)
	key := keyIn(2, 0)
	for seq := uint64(1); seq <= 3; seq++ {
		g1.answer(appendCmd(key, "x", 7, seq))
	}
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(2, c2...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := g1.apply(handOver(2, 2)); err != nil {
		t.Fatal(err)
	}
	chunks := g1.export(2, 2)
	if len(chunks) != 1 || len(chunks[0].Kvs) != 1 || chunks[0].Kvs[0].GetVersion() != 3 || string(chunks[0].Kvs[0].GetValue()) != "xxx" {
		t.Fatalf("exported %v", chunks)
	}
	if err := g2.apply(&grouppb.Command{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{
		ConfigNum: 2, Shard: 2, Kvs: chunks[0].Kvs, Sessions: chunks[0].Sessions, Last: true}}}); err != nil {
		t.Fatal(err)
	}
	if v := g2.version(key); v != 3 {
		t.Fatalf("version after the handoff %d, want 3", v)
	}
	// A retry of the last append, then a new one.
	if res := g2.answer(appendCmd(key, "x", 7, 3)); res.Version != 3 {
		t.Fatalf("retry after the handoff: %+v", res)
	}
	if res := g2.answer(cond(appendCmd(key, "y", 7, 4), version(3), nil)); !res.Succeeded || res.Version != 4 || string(res.Value) != "xxxy" {
		t.Fatalf("conditional append after the handoff: %+v", res)
	}

	restored := g2.restored()
	if v := restored.version(key); v != 4 {
		t.Fatalf("version after a snapshot %d, want 4", v)
	}
	_, d2, _ := g2.sm.Digests()
	_, dr, _ := restored.sm.Digests()
	if d2[2] != dr[2] {
		t.Fatal("a restored replica's digest differs")
	}
	if res := restored.answer(put(key, "z", 8, 1)); res.Version != 5 {
		t.Fatalf("put after a snapshot: %+v", res)
	}
}

// TestDigestsCoverVersions: replicas whose only difference is a key's
// version have different digests.
func TestDigestsCoverVersions(t *testing.T) {
	a, b := newReplica(t, 1, Limits{}), newReplica(t, 1, Limits{})
	if err := a.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	key := keyIn(3, 0)
	a.answer(put(key, "v", 1, 1))
	data, err := a.sm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var img grouppb.Image
	if err := proto.Unmarshal(data, &img); err != nil {
		t.Fatal(err)
	}
	img.Shards[0].Kvs[0].Version = 2
	if data, err = proto.Marshal(&img); err != nil {
		t.Fatal(err)
	}
	if err := b.sm.Restore(data); err != nil {
		t.Fatal(err)
	}
	if va, vb := a.version(key), b.version(key); va != 1 || vb != 2 {
		t.Fatalf("versions %d and %d", va, vb)
	}
	_, da, _ := a.sm.Digests()
	_, db, _ := b.sm.Digests()
	if da[3] == db[3] {
		t.Fatal("digests equal for different versions")
	}
}

// TestRestoreKeepsVersions: a backup's keys are restored at their
// versions; a key from a backup written before versions starts at 1.
func TestRestoreKeepsVersions(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	versioned, unversioned := keyIn(4, 0), keyIn(4, 1)
	chunk := restoreCmd(1, 4, 1, true, versioned, "a", unversioned, "b")
	chunk.GetRestore().Kvs[0].Version = 5
	for _, cmd := range []*grouppb.Command{restoreCmd(1, 4, 0, false), chunk} {
		if err := r.apply(cmd); err != nil {
			t.Fatal(err)
		}
	}
	if v1, v2 := r.version(versioned), r.version(unversioned); v1 != 5 || v2 != 1 {
		t.Fatalf("restored at versions %d and %d, want 5 and 1", v1, v2)
	}
}
