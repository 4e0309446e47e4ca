package group

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

const nShards = 8

// replica is a state machine under test with its own log position.
type replica struct {
	t     testing.TB
	sm    *StateMachine
	index uint64
	stamp int64
}

func newReplica(t testing.TB, gid uint64, limits Limits) *replica {
	t.Helper()
	e, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	sm, err := Open(e, storage.Replica{Group: gid, ID: 1}, limits)
	if err != nil {
		t.Fatal(err)
	}
	return &replica{t: t, sm: sm, stamp: 1}
}

// apply applies cmd as the next log entry. A write that is the first of
// its session (sequence 1) is preceded by the session's opening, as the
// client does.
func (r *replica) apply(cmd *grouppb.Command) error {
	r.t.Helper()
	if w := cmd.GetWrite(); w != nil && w.GetSeq() == 1 && w.GetClientId() != 0 {
		open := write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, string(w.GetKey()), "", w.GetClientId(), 0)
		open.Stamp = cmd.Stamp
		if err := r.applyEntry(open); err != nil && !errors.Is(err, kvpb.ErrWrongGroup) && !errors.Is(err, kvpb.ErrEmptyKey) && !errors.Is(err, kvpb.ErrKeyTooLarge) {
			r.t.Fatalf("open session: %v", err)
		}
	}
	return r.applyEntry(cmd)
}

func (r *replica) applyEntry(cmd *grouppb.Command) error {
	r.t.Helper()
	_, err := r.applyWrite(cmd)
	return err
}

// applyWrite applies cmd as the next log entry (no session opened) and
// returns its outcome: a write's result, or an error.
func (r *replica) applyWrite(cmd *grouppb.Command) (*WriteResult, error) {
	r.t.Helper()
	r.index++
	if cmd.Stamp == 0 {
		cmd.Stamp = r.stamp
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		r.t.Fatal(err)
	}
	res, err := r.sm.Apply([]raftnode.Entry{{Index: r.index, Term: 1, Data: data}})
	if err != nil {
		r.t.Fatal(err)
	}
	switch o := res[0].(type) {
	case nil:
		return nil, nil
	case *WriteResult:
		return o, nil
	case error:
		return nil, o
	}
	r.t.Fatalf("outcome %T", res[0])
	return nil, nil
}

func config(num uint64, owners ...uint64) *grouppb.Command {
	c := controller.Config{Num: num, Shards: owners, Groups: map[uint64][]string{}}
	for _, g := range owners {
		if g != 0 {
			c.Groups[g] = []string{fmt.Sprint("g", g)}
		}
	}
	return &grouppb.Command{Op: &grouppb.Command_Install{Install: &grouppb.InstallConfig{Config: c.ToProto()}}}
}

func all(g uint64) []uint64 {
	o := make([]uint64, nShards)
	for i := range o {
		o[i] = g
	}
	return o
}

func with(owners []uint64, shard int, g uint64) []uint64 {
	o := append([]uint64(nil), owners...)
	o[shard] = g
	return o
}

func write(op kvpb.WriteOp, key, value string, client, seq uint64) *grouppb.Command {
	return &grouppb.Command{Op: &grouppb.Command_Write{Write: &kvpb.WriteRequest{Op: op, Key: []byte(key), Value: []byte(value), ClientId: client, Seq: seq}}}
}

func put(key, value string, client, seq uint64) *grouppb.Command {
	return write(kvpb.WriteOp_WRITE_OP_PUT, key, value, client, seq)
}

func appendCmd(key, value string, client, seq uint64) *grouppb.Command {
	return write(kvpb.WriteOp_WRITE_OP_APPEND, key, value, client, seq)
}

// keyIn returns a key that hashes to shard.
func keyIn(shard int, n int) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("key-%d-%d", n, i)
		if controller.ShardOf([]byte(k), nShards) == shard {
			return k
		}
	}
}

// checkRetryNotReapplied checks r's duplicate table for key, to which
// client 7 appended "a" as its seq 1 (and nothing else was written): a
// retry of that append is not applied again, the next one (seq 2, "b") is,
// so key holds "ab". what names r's copy in a failure.
func (r *replica) checkRetryNotReapplied(key, what string) {
	r.t.Helper()
	if err := r.apply(appendCmd(key, "a", 7, 1)); err != nil {
		r.t.Fatal(err)
	}
	if err := r.apply(appendCmd(key, "b", 7, 2)); err != nil {
		r.t.Fatal(err)
	}
	if v, _ := r.get(key); v != "ab" {
		r.t.Fatalf("%s holds %q, want ab", what, v)
	}
}

func (r *replica) get(key string) (string, error) {
	v, version, err := r.sm.Get([]byte(key))
	if err != nil {
		return "", err
	}
	if version == 0 {
		return "<none>", nil
	}
	return string(v), nil
}

func TestOwnershipAndConfigOrder(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	k0 := keyIn(0, 0)
	if err := r.apply(put(k0, "v", 1, 1)); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("write before any configuration: %v", err)
	}
	if err := r.apply(config(2, all(1)...)); !errors.Is(err, kvpb.ErrStaleConfig) {
		t.Fatalf("configuration 2 before 1: %v", err)
	}
	owners := with(all(1), 3, 2)
	if err := r.apply(config(1, owners...)); err != nil {
		t.Fatal(err)
	}
	if err := r.apply(put(k0, "v", 1, 1)); err != nil {
		t.Fatalf("write to an owned shard: %v", err)
	}
	if err := r.apply(put(keyIn(3, 0), "v", 2, 1)); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("write to another group's shard: %v", err)
	}
	if _, err := r.get(keyIn(3, 0)); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("read of another group's shard: %v", err)
	}
	if err := r.sm.CheckWrite(kvpb.WriteOp_WRITE_OP_PUT, []byte(keyIn(3, 0)), nil); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("arrival check: %v", err)
	}
	if v, _ := r.get(k0); v != "v" {
		t.Fatalf("read %q", v)
	}
	if got := r.sm.View().Config.Num; got != 1 {
		t.Fatalf("config %d", got)
	}
}

// twoGroups returns replicas of groups 1 and 2 at configuration 1 (group
// 1 owns every shard), and the shard owners of configuration 2, which
// moves shard 2 to group 2.
func twoGroups(t *testing.T) (g1, g2 *replica, c2 []uint64) {
	g1, g2 = newReplica(t, 1, Limits{}), newReplica(t, 2, Limits{})
	c1 := all(1)
	c2 = with(c1, 2, 2)
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(1, c1...)); err != nil {
			t.Fatal(err)
		}
	}
	return g1, g2, c2
}

// export returns the chunks (of up to 1 MiB) of shard, which r offers
// at configuration num.
func (r *replica) export(num uint64, shard int) []*grouppb.ShardChunk {
	r.t.Helper()
	x, err := r.sm.ExportShard(num, shard)
	if err != nil {
		r.t.Fatal(err)
	}
	defer x.Close()
	var chunks []*grouppb.ShardChunk
	if err := x.Chunks(1<<20, func(c *grouppb.ShardChunk) error { chunks = append(chunks, c); return nil }); err != nil {
		r.t.Fatal(err)
	}
	return chunks
}

// TestHandoff moves shard 2 from group 1 to group 2 and back through both
// state machines, as the drivers would.
func TestHandoff(t *testing.T) {
	g1, g2, c2 := twoGroups(t)
	key := keyIn(2, 0)
	if err := g1.apply(appendCmd(key, "a", 7, 1)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(2, c2...)); err != nil {
			t.Fatal(err)
		}
	}
	if st := g1.sm.View().Shards[2]; st.State != Held || st.Peer != 2 {
		t.Fatalf("old owner holds shard as %+v", st)
	}
	if st := g2.sm.View().Shards[2]; st.State != Pulling || st.Peer != 1 {
		t.Fatalf("new owner holds shard as %+v", st)
	}
	if err := g1.apply(appendCmd(key, "b", 7, 2)); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("old owner accepted a write: %v", err)
	}
	if err := g2.apply(appendCmd(key, "b", 7, 2)); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("new owner before data: %v", err)
	}
	if err := g1.apply(config(3, c2...)); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("old owner moved on while offering: %v", err)
	}
	if _, err := g1.sm.ExportShard(3, 2); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("export ahead of the owner's configuration: %v", err)
	}
	if _, err := g1.sm.ExportShard(1, 2); !errors.Is(err, kvpb.ErrStaleConfig) {
		t.Fatalf("export of a passed configuration: %v", err)
	}
	// No data leaves before the handover is in the old owner's log.
	if _, err := g1.sm.ExportShard(2, 2); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("export before the handover: %v", err)
	}
	for _, tc := range []struct {
		num   uint64
		shard uint32
		want  error
	}{{3, 2, kvpb.ErrNotReady}, {1, 2, kvpb.ErrStaleConfig}, {2, 3, kvpb.ErrStaleConfig}, {2, 2, nil}, {2, 2, nil}} {
		if err := g1.apply(handOver(tc.num, tc.shard)); !errors.Is(err, tc.want) {
			t.Fatalf("handover of shard %d at %d: %v, want %v", tc.shard, tc.num, err, tc.want)
		}
	}
	if st := g1.sm.View().Shards[2]; st.State != Offering || st.Peer != 2 || !g1.sm.HandedOver(2, 2) {
		t.Fatalf("old owner after the handover: %+v", st)
	}

	x, err := g1.sm.ExportShard(2, 2)
	if err != nil {
		t.Fatal(err)
	}
	var chunks []*grouppb.ShardChunk
	if err := x.Chunks(1, func(c *grouppb.ShardChunk) error { chunks = append(chunks, c); return nil }); err != nil {
		t.Fatal(err)
	}
	x.Close()
	insert := func(i int, c *grouppb.ShardChunk, num uint64) error {
		return g2.apply(&grouppb.Command{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{
			ConfigNum: num, Shard: 2, Chunk: uint64(i), Kvs: c.Kvs, Sessions: c.Sessions, Last: c.Last}}})
	}
	if err := insert(0, chunks[0], 1); !errors.Is(err, kvpb.ErrStaleConfig) {
		t.Fatalf("chunk for another configuration: %v", err)
	}
	if err := insert(1, chunks[len(chunks)-1], 2); !errors.Is(err, kvpb.ErrStaleConfig) {
		t.Fatalf("chunk out of order: %v", err)
	}
	// A pull interrupted after its first chunk, then restarted: harmless.
	if err := insert(0, chunks[0], 2); err != nil {
		t.Fatal(err)
	}
	for i, c := range chunks {
		if err := insert(i, c, 2); err != nil {
			t.Fatal(err)
		}
	}
	if st := g2.sm.View().Shards[2].State; st != Confirming {
		t.Fatalf("after the last chunk: %v", st)
	}
	if err := insert(0, chunks[0], 2); !errors.Is(err, kvpb.ErrStaleConfig) {
		t.Fatalf("chunk after completion: %v", err)
	}
	// The duplicate table came along: a retry of seq 1 is not applied again.
	g2.checkRetryNotReapplied(key, "new owner")
	if err := g2.apply(config(3, c2...)); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("new owner moved on before deletion was confirmed: %v", err)
	}

	// Garbage collection through both logs.
	del := &grouppb.Command{Op: &grouppb.Command_DeleteShard{DeleteShard: &grouppb.DeleteShardRequest{ConfigNum: 2, Shard: 2}}}
	if err := g1.apply(del); err != nil {
		t.Fatal(err)
	}
	if st := g1.sm.View().Shards[2].State; st != Absent {
		t.Fatalf("old owner after delete: %v", st)
	}
	if err := g1.apply(proto.Clone(del).(*grouppb.Command)); err != nil {
		t.Fatalf("repeated delete: %v", err)
	}
	if n := countKeys(t, g1.sm, 2); n != 0 {
		t.Fatalf("old owner keeps %d keys of the deleted shard", n)
	}
	if err := g2.apply(&grouppb.Command{Op: &grouppb.Command_ConfirmDelete{ConfirmDelete: &grouppb.ConfirmDelete{ConfigNum: 2, Shard: 2}}}); err != nil {
		t.Fatal(err)
	}
	if st := g2.sm.View().Shards[2].State; st != Serving {
		t.Fatalf("new owner after confirmation: %v", st)
	}
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(3, c2...)); err != nil {
			t.Fatalf("group %d to configuration 3: %v", r.sm.gid, err)
		}
	}
}

func handOver(num uint64, shard uint32) *grouppb.Command {
	return &grouppb.Command{Op: &grouppb.Command_HandOver{HandOver: &grouppb.PullShardRequest{ConfigNum: num, Shard: shard}}}
}

func abandonPull(num uint64, shard uint32) *grouppb.Command {
	return &grouppb.Command{Op: &grouppb.Command_AbandonPull{AbandonPull: &grouppb.PullShardRequest{ConfigNum: num, Shard: shard}}}
}

// TestGiveBack: a shard lost to a group that never pulled it (dead, say)
// is taken back by its old owner when a configuration gives it back, with
// its data and duplicate table, and without a handoff; once its handover is
// logged it is not. The new owner, if it comes back, gives up its pull when
// the old owner answers it as past, and moves on.
func TestGiveBack(t *testing.T) {
	g1, g2 := newReplica(t, 1, Limits{}), newReplica(t, 2, Limits{})
	c1 := all(1)
	c2 := with(with(c1, 2, 2), 5, 2)
	key2, key5 := keyIn(2, 0), keyIn(5, 0)
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(1, c1...)); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{key2, key5} {
		if err := g1.apply(appendCmd(k, "a", 7, 1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(2, c2...)); err != nil {
			t.Fatal(err)
		}
	}
	// Shard 5 is being pulled (its handover is logged); shard 2 is not.
	if err := g1.apply(handOver(2, 5)); err != nil {
		t.Fatal(err)
	}
	// Configuration 3 gives shard 2 back but not shard 5: blocked by 5.
	if err := g1.apply(config(3, with(c2, 2, 1)...)); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("gave back a shard whose data may have left: %v", err)
	}
	// Giving back both is blocked by 5 too.
	if err := g1.apply(config(3, c1...)); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("gave back a handed over shard: %v", err)
	}
	if st := g1.sm.View().Shards[5].State; st != Offering {
		t.Fatalf("shard 5: %v", st)
	}
	// Finish shard 5's move as the drivers would; then configuration 3,
	// which gives shard 2 back, installs and shard 2 serves at once.
	chunks := g1.export(2, 5)
	for i, c := range chunks {
		if err := g2.apply(&grouppb.Command{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{
			ConfigNum: 2, Shard: 5, Chunk: uint64(i), Kvs: c.Kvs, Sessions: c.Sessions, Last: c.Last}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := g1.apply(&grouppb.Command{Op: &grouppb.Command_DeleteShard{DeleteShard: &grouppb.DeleteShardRequest{ConfigNum: 2, Shard: 5}}}); err != nil {
		t.Fatal(err)
	}
	if err := g2.apply(&grouppb.Command{Op: &grouppb.Command_ConfirmDelete{ConfirmDelete: &grouppb.ConfirmDelete{ConfigNum: 2, Shard: 5}}}); err != nil {
		t.Fatal(err)
	}
	c3 := with(c2, 2, 1)
	if err := g1.apply(config(3, c3...)); err != nil {
		t.Fatalf("old owner with a shard given back: %v", err)
	}
	if st := g1.sm.View().Shards[2].State; st != Serving {
		t.Fatalf("given back shard: %v", st)
	}
	// Its data and duplicate table are the ones it had: a retry is not
	// applied again, a new write is.
	g1.checkRetryNotReapplied(key2, "given back shard")

	// The new owner comes back: it is still pulling shard 2 at 2, which the
	// old owner now answers as past.
	if err := g1.apply(handOver(2, 2)); !errors.Is(err, kvpb.ErrStaleConfig) {
		t.Fatalf("handover after the give-back: %v", err)
	}
	if _, err := g1.sm.ExportShard(2, 2); !errors.Is(err, kvpb.ErrStaleConfig) {
		t.Fatalf("export after the give-back: %v", err)
	}
	if err := g2.apply(config(3, c3...)); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("new owner moved on while pulling: %v", err)
	}
	// A partial copy (impossible without a handover, but harmless) goes
	// with the pull.
	if err := g2.apply(&grouppb.Command{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{ConfigNum: 2, Shard: 2,
		Kvs: []*grouppb.KeyValue{{Key: []byte(key2), Value: []byte("x")}}}}}); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []*grouppb.Command{abandonPull(1, 2), abandonPull(2, 5), abandonPull(2, 2), abandonPull(2, 2)} {
		if err := g2.apply(cmd); err != nil {
			t.Fatal(err)
		}
	}
	if st := g2.sm.View().Shards; st[2].State != Absent || st[5].State != Serving {
		t.Fatalf("new owner after giving up shard 2: %+v", st)
	}
	if n := countKeys(t, g2.sm, 2); n != 0 {
		t.Fatalf("%d keys of the abandoned pull left", n)
	}
	if err := g2.apply(appendCmd(key2, "c", 8, 1)); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("write to the abandoned shard: %v", err)
	}
	// A configuration that gave it back to this group cannot follow (the
	// old owner took it back only because the next one gives it to the
	// old owner): refused, nothing changes.
	if err := g2.apply(config(3, c2...)); !errors.Is(err, rpcerr.ErrMalformed) {
		t.Fatalf("configuration giving the abandoned shard back: %v", err)
	}
	if err := g2.apply(config(3, c3...)); err != nil {
		t.Fatalf("new owner to configuration 3: %v", err)
	}
	if st := g2.sm.View().Shards; st[2].State != Absent || st[5].State != Serving {
		t.Fatalf("new owner at 3: %+v", st)
	}
}

func countKeys(t *testing.T, sm *StateMachine, shard int) int {
	dl, dh, sl, sh := sm.shardSpans(shard)
	n := 0
	for _, span := range [][2][]byte{{dl, dh}, {sl, sh}} {
		if err := storage.Scan(sm.db, span[0], span[1], func(_, _ []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func TestExactlyOnceAndLimits(t *testing.T) {
	r := newReplica(t, 1, Limits{MaxKeySize: 8, MaxValueSize: 4})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	if err := r.apply(appendCmd("k", "ab", 5, 1)); err != nil {
		t.Fatal(err)
	}
	if err := r.apply(appendCmd("k", "ab", 5, 1)); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.get("k"); v != "ab" {
		t.Fatalf("retried append applied twice: %q", v)
	}
	// An append past the limit fails at apply, and its retry gets the same
	// failure even after the value shrank.
	if err := r.apply(appendCmd("k", "xyz", 5, 2)); !errors.Is(err, kvpb.ErrValueTooLarge) {
		t.Fatalf("append past the limit: %v", err)
	}
	if err := r.apply(put("k", "", 6, 1)); err != nil {
		t.Fatal(err)
	}
	if err := r.apply(appendCmd("k", "xyz", 5, 2)); !errors.Is(err, kvpb.ErrValueTooLarge) {
		t.Fatalf("retry of a failed append: %v", err)
	}
	if v, _ := r.get("k"); v != "" {
		t.Fatalf("value %q", v)
	}
	if err := r.apply(appendCmd("k", "z", 5, 1)); !errors.Is(err, rpcerr.ErrStaleRequest) {
		t.Fatalf("older request: %v", err)
	}
	for _, tc := range []struct {
		cmd  *grouppb.Command
		want error
	}{
		{put("123456789", "v", 9, 1), kvpb.ErrKeyTooLarge},
		{put("", "v", 9, 2), kvpb.ErrEmptyKey},
		{put("k", "12345", 9, 3), kvpb.ErrValueTooLarge},
	} {
		if err := r.sm.CheckWrite(tc.cmd.GetWrite().GetOp(), tc.cmd.GetWrite().GetKey(), tc.cmd.GetWrite().GetValue()); !errors.Is(err, tc.want) {
			t.Fatalf("check %v: %v, want %v", tc.cmd, err, tc.want)
		}
	}
	if err := r.apply(put("k", "12345", 9, 1)); !errors.Is(err, kvpb.ErrValueTooLarge) {
		t.Fatalf("oversized put at apply: %v", err)
	}
	if v, _ := r.get("k"); v != "" {
		t.Fatalf("oversized put changed the value to %q", v)
	}
	if err := r.apply(&grouppb.Command{}); !errors.Is(err, rpcerr.ErrMalformed) {
		t.Fatalf("empty command: %v", err)
	}
	// A write that names no op is malformed, never a put.
	if err := r.apply(write(kvpb.WriteOp_WRITE_OP_UNSPECIFIED, "k", "v", 9, 2)); !errors.Is(err, rpcerr.ErrMalformed) {
		t.Fatalf("write without an op: %v", err)
	}
	if v, _ := r.get("k"); v != "" {
		t.Fatalf("a write without an op changed the value to %q", v)
	}
}

func TestSessionsExpireByLeaderStamps(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	ttl := r.sm.limits.SessionTTL.Milliseconds()
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	r.stamp = 1000
	if err := r.apply(appendCmd("k", "a", 5, 1)); err != nil {
		t.Fatal(err)
	}
	r.stamp = 1000 + ttl + 1
	if err := r.apply(put("other", "x", 6, 1)); err != nil {
		t.Fatal(err)
	}
	shard := controller.ShardOf([]byte("k"), nShards)
	if n := countSessions(t, r.sm, shard, 5); n != 0 {
		t.Fatal("idle session survived its TTL")
	}
}

func countSessions(t *testing.T, sm *StateMachine, shard int, client uint64) int {
	_, ok, err := storage.Get(sm.db, sm.sessionKey(shard, client))
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		return 1
	}
	return 0
}

// TestDeterministic applies one random command sequence to two replicas
// and to a third restored from a snapshot: all end byte-identical.
func TestDeterministic(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	a, b := newReplica(t, 1, Limits{}), newReplica(t, 1, Limits{})
	var cmds []*grouppb.Command
	cmds = append(cmds, config(1, all(1)...))
	for i := 0; i < 300; i++ {
		key := fmt.Sprintf("k%d", rng.IntN(20))
		client, seq := uint64(rng.IntN(4)+1), uint64(i/3+1)
		switch rng.IntN(4) {
		case 0:
			cmds = append(cmds, put(key, fmt.Sprint(i), client, seq))
		case 1:
			cmds = append(cmds, appendCmd(key, fmt.Sprint(i), client, seq))
		case 2:
			cmds = append(cmds, write(kvpb.WriteOp_WRITE_OP_DELETE, key, "", client, seq))
		default:
			cmds = append(cmds, config(uint64(rng.IntN(3)+1), with(all(1), rng.IntN(nShards), 1)...))
		}
	}
	for _, c := range cmds {
		c.Stamp = int64(len(c.String()))
		ea, eb := a.apply(proto.Clone(c).(*grouppb.Command)), b.apply(proto.Clone(c).(*grouppb.Command))
		if fmt.Sprint(ea) != fmt.Sprint(eb) {
			t.Fatalf("outcomes differ: %v vs %v", ea, eb)
		}
	}
	ia, err := a.sm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	ib, _ := b.sm.Snapshot()
	if !bytes.Equal(ia, ib) {
		t.Fatal("replicas diverged")
	}
	c := newReplica(t, 1, Limits{})
	if err := c.sm.Restore(ia); err != nil {
		t.Fatal(err)
	}
	ic, _ := c.sm.Snapshot()
	if !bytes.Equal(ia, ic) {
		t.Fatal("restore is not faithful")
	}
	if c.sm.Applied() != a.sm.Applied() {
		t.Fatal("restore lost the applied index")
	}
}

func TestDigestsFollowState(t *testing.T) {
	a, b := newReplica(t, 1, Limits{}), newReplica(t, 1, Limits{})
	b.sm.r.ID = 2 // another replica of the same group: its keys differ in their prefix
	for _, r := range []*replica{a, b} {
		if err := r.apply(config(1, all(1)...)); err != nil {
			t.Fatal(err)
		}
		if err := r.apply(put(keyIn(3, 0), "v", 1, 1)); err != nil {
			t.Fatal(err)
		}
	}
	_, da, _ := a.sm.Digests()
	_, db, _ := b.sm.Digests()
	if fmt.Sprint(da) != fmt.Sprint(db) {
		t.Fatal("equal replicas report different digests")
	}
	if err := b.apply(put(keyIn(3, 0), "w", 1, 2)); err != nil {
		t.Fatal(err)
	}
	_, db, _ = b.sm.Digests()
	if da[3] == db[3] || da[2] != db[2] {
		t.Fatalf("digest of the changed shard did not change, or another did: %v vs %v", da, db)
	}
}

// TestClockJumpDoesNotApplyRetryTwice is issue 11's repro: an append
// (client 42, sequence 7) is applied at T; another write arrives stamped
// T+2h (a leader whose wall clock stepped ahead) and expires the session;
// the retry of sequence 7 at T+3s must not be applied again.
func TestClockJumpDoesNotApplyRetryTwice(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	const T = int64(1_700_000_000_000)
	r.stamp = T
	for seq := uint64(1); seq < 7; seq++ {
		if err := r.apply(put("k", "", 42, seq)); err != nil { // sessions are per shard: same key
			t.Fatal(err)
		}
	}
	if err := r.apply(appendCmd("k", "x", 42, 7)); err != nil {
		t.Fatal(err)
	}
	r.stamp = T + 2*time.Hour.Milliseconds()
	if err := r.apply(put("other", "y", 99, 1)); err != nil {
		t.Fatal(err)
	}
	r.stamp = T + 3000
	if err := r.apply(appendCmd("k", "x", 42, 7)); !errors.Is(err, rpcerr.ErrSessionExpired) {
		t.Fatalf("retry after the session expired: %v, want ErrSessionExpired", err)
	}
	if v, _ := r.get("k"); v != "x" {
		t.Fatalf("value %q, want %q: the retry was applied twice", v, "x")
	}
	// Replicated time never goes back, whatever the stamps.
	if got, want := r.sm.Now(), T+2*time.Hour.Milliseconds(); got != want {
		t.Fatalf("replicated time %d, want %d", got, want)
	}
	// A new session's first request is applied.
	if err := r.apply(appendCmd("k", "z", 43, 1)); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.get("k"); v != "xz" {
		t.Fatalf("value %q", v)
	}
}

// TestReplicatedTimeSurvivesRestartAndSnapshot: a replica reopened, or
// restored from a snapshot, continues from the replicated time it had.
func TestReplicatedTimeSurvivesRestartAndSnapshot(t *testing.T) {
	afterRestartAndSnapshot(t, 123_456, func(r *replica) {
		if err := r.apply(config(1, all(1)...)); err != nil {
			t.Fatal(err)
		}
		if err := r.apply(put("k", "v", 1, 1)); err != nil {
			t.Fatal(err)
		}
	}, func(sm *StateMachine, what string) {
		if sm.Now() != 123_456 {
			t.Fatalf("%s replica's time %d", what, sm.Now())
		}
	})
}

// afterRestartAndSnapshot runs fill on a replica of group 1 whose
// commands are stamped stamp, then check on the replica reopened from its
// engine ("reopened") and on another restored from its snapshot
// ("restored").
func afterRestartAndSnapshot(t *testing.T, stamp int64, fill func(*replica), check func(sm *StateMachine, what string)) {
	t.Helper()
	dir := t.TempDir()
	e, err := storage.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	sm, err := Open(e, storage.Replica{Group: 1, ID: 1}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	fill(&replica{t: t, sm: sm, stamp: stamp})
	img, err := sm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if e, err = storage.Open(dir); err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	reopened, err := Open(e, storage.Replica{Group: 1, ID: 1}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	check(reopened, "reopened")
	other := newReplica(t, 1, Limits{})
	if err := other.sm.Restore(img); err != nil {
		t.Fatal(err)
	}
	check(other.sm, "restored")
}

// TestSessionsMustBeOpened: a write in a session the shard does not know is
// refused and changes nothing, even with sequence 1 (it may be the retry
// of a first write applied before the session expired); opening is
// idempotent and does not reset a session in use.
func TestSessionsMustBeOpened(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	if err := r.apply(config(1, all(1)...)); err != nil {
		t.Fatal(err)
	}
	if err := r.applyEntry(appendCmd("k", "x", 7, 1)); !errors.Is(err, rpcerr.ErrSessionExpired) {
		t.Fatalf("write in an unopened session: %v", err)
	}
	if v, _ := r.get("k"); v != "<none>" {
		t.Fatalf("refused write changed the value to %q", v)
	}
	open := write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, "k", "", 7, 0)
	for range 2 {
		if err := r.applyEntry(open); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.applyEntry(appendCmd("k", "x", 7, 1)); err != nil {
		t.Fatal(err)
	}
	if err := r.applyEntry(open); err != nil { // a late retry of the opening
		t.Fatal(err)
	}
	if err := r.applyEntry(appendCmd("k", "x", 7, 1)); err != nil { // retry: deduplicated
		t.Fatal(err)
	}
	if v, _ := r.get("k"); v != "x" {
		t.Fatalf("value %q, want x", v)
	}
	if err := r.applyEntry(write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, "k", "", 7, 3)); !errors.Is(err, rpcerr.ErrMalformed) {
		t.Fatalf("opening with a sequence number: %v", err)
	}
}

// TestRefusedChunkChangesNothing: a shard chunk refused as malformed (a
// key of another shard) leaves the pull exactly as it was, on disk and in
// memory. A restarting pull's chunk 0 with a bad key used to drop the
// data already pulled and reset the expected chunk in memory only, so a
// replica that restarted afterwards disagreed with one that did not
// (found by TestMetamorphic).
func TestRefusedChunkChangesNothing(t *testing.T) {
	e, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	id := storage.Replica{Group: 2, ID: 1}
	sm, err := Open(e, id, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{t: t, sm: sm, stamp: 1}
	for _, c := range []*grouppb.Command{config(1, all(1)...), config(2, with(all(1), 2, 2)...)} {
		if err := r.apply(c); err != nil {
			t.Fatal(err)
		}
	}
	chunk := func(n uint64, key string) *grouppb.Command {
		return &grouppb.Command{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{ConfigNum: 2, Shard: 2, Chunk: n,
			Kvs: []*grouppb.KeyValue{{Key: []byte(key), Value: []byte("v")}}}}}
	}
	for n := range uint64(2) {
		if err := r.apply(chunk(n, keyIn(2, int(n)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.apply(chunk(0, keyIn(3, 0))); !errors.Is(err, rpcerr.ErrMalformed) {
		t.Fatalf("chunk with a key of another shard: %v", err)
	}
	reopened, err := Open(e, id, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*StateMachine{sm, reopened} {
		if got := s.meta.shards[2].nextChunk; got != 2 {
			t.Fatalf("expected chunk %d after a refused chunk, want 2", got)
		}
	}
	if n := countKeys(t, sm, 2); n != 2 {
		t.Fatalf("%d keys of the pulled shard left after a refused chunk, want 2", n)
	}
	if err := r.apply(chunk(2, keyIn(2, 2))); err != nil {
		t.Fatalf("the next chunk after a refused one: %v", err)
	}
}
