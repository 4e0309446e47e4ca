package group

import (
	"errors"
	"testing"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
)

func restoreCmd(num uint64, shard int, chunk uint64, last bool, kvs ...string) *grouppb.Command {
	in := &grouppb.InsertShard{ConfigNum: num, Shard: uint32(shard), Chunk: chunk, Last: last}
	for i := 0; i+1 < len(kvs); i += 2 {
		in.Kvs = append(in.Kvs, &grouppb.KeyValue{Key: []byte(kvs[i]), Value: []byte(kvs[i+1])})
	}
	return &grouppb.Command{Op: &grouppb.Command_Restore{Restore: in}}
}

// TestRestoreFillsOnlyEmptyShardsAndServesWhenDone: a restore starts only
// on an empty shard the group serves at the entry's configuration, takes
// its chunks in order, does not serve the shard (nor install the next
// configuration) until its last chunk, and a restarted restore clears the
// partial load.
func TestRestoreFillsOnlyEmptyShardsAndServesWhenDone(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	if err := r.apply(config(1, with(all(1), 1, 2)...)); err != nil {
		t.Fatal(err)
	}
	k0, k0b := keyIn(0, 0), keyIn(0, 1)
	used := keyIn(2, 0)
	if err := r.apply(put(used, "live", 1, 1)); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		cmd  *grouppb.Command
		want error
	}{
		"not empty":           {restoreCmd(1, 2, 0, false), ErrNotEmpty},
		"another group's":     {restoreCmd(1, 1, 0, false), kvpb.ErrWrongGroup},
		"other configuration": {restoreCmd(2, 0, 0, false), kvpb.ErrStaleConfig},
		"not started":         {restoreCmd(1, 0, 1, true, k0, "x"), kvpb.ErrStaleConfig},
		"data in chunk 0":     {restoreCmd(1, 0, 0, false, k0, "x"), rpcerr.ErrMalformed},
		"start of shard 3":    {restoreCmd(1, 3, 0, false), nil},
	} {
		if err := r.apply(c.cmd); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
			t.Fatalf("%s: %v, want %v", name, err, c.want)
		}
	}
	// Shard 3 was started by the last case: a key of shard 0 is refused.
	if err := r.apply(restoreCmd(1, 3, 1, true, k0, "x")); !errors.Is(err, rpcerr.ErrMalformed) {
		t.Fatalf("key of another shard: %v", err)
	}
	if v, _ := r.get(used); v != "live" {
		t.Fatalf("refused restore changed a used shard: %q", v)
	}

	// A load of shard 0, restarted half way.
	for _, cmd := range []*grouppb.Command{restoreCmd(1, 0, 0, false), restoreCmd(1, 0, 1, false, k0, "stale")} {
		if err := r.apply(cmd); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.get(k0); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("a shard being restored served: %v", err)
	}
	if err := r.applyEntry(put(k0, "client", 2, 1)); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("a write to a shard being restored: %v", err)
	}
	if st, next := r.sm.RestoreProgress(0); st != Restoring || next != 2 {
		t.Fatalf("progress %v %d, want restoring 2", st, next)
	}
	if r.sm.CanInstall(controller.Config{Num: 2, Shards: all(1)}) {
		t.Fatal("the next configuration would install during a restore")
	}
	for _, cmd := range []*grouppb.Command{restoreCmd(1, 0, 0, false), restoreCmd(1, 0, 1, false, k0, "a"),
		restoreCmd(1, 0, 2, true, k0b, "b")} {
		if err := r.apply(cmd); err != nil {
			t.Fatal(err)
		}
	}
	for k, want := range map[string]string{k0: "a", k0b: "b"} {
		if v, err := r.get(k); err != nil || v != want {
			t.Fatalf("after the restore %s = %q, %v; want %q", k, v, err, want)
		}
	}
	if err := r.apply(restoreCmd(1, 0, 0, false)); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("a second restore of a restored shard: %v", err)
	}
	if err := r.apply(appendCmd(k0, "+", 3, 1)); err != nil {
		t.Fatal(err)
	}
	if v, _ := r.get(k0); v != "a+" {
		t.Fatalf("after a write: %q", v)
	}
}

// TestExportForBackup: only at the backup's configuration, only shards the
// group owns and serves, all as of one applied index.
func TestExportForBackup(t *testing.T) {
	r := newReplica(t, 1, Limits{})
	if _, err := r.sm.ExportForBackup(1, []int{0}); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("before any configuration: %v", err)
	}
	if err := r.apply(config(1, with(all(1), 1, 2)...)); err != nil {
		t.Fatal(err)
	}
	k0 := keyIn(0, 0)
	if err := r.apply(put(k0, "v", 1, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.sm.ExportForBackup(1, []int{0, 1}); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("another group's shard: %v", err)
	}
	x, err := r.sm.ExportForBackup(1, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.apply(put(k0, "after", 1, 2)); err != nil { // not in the export
		t.Fatal(err)
	}
	var kvs, sessions int
	if err := x.Chunks(0, 1<<20, func(c *grouppb.ShardChunk) error {
		for _, kv := range c.GetKvs() {
			if kvs++; string(kv.GetKey()) != k0 || string(kv.GetValue()) != "v" {
				t.Fatalf("exported %q=%q", kv.GetKey(), kv.GetValue())
			}
		}
		sessions += len(c.GetSessions())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	x.Close()
	if kvs != 1 || sessions != 1 {
		t.Fatalf("exported %d keys, %d sessions; want 1, 1", kvs, sessions)
	}
	// Configuration 2 moves shard 0 to group 2: not served while it is Held,
	// and the group is past 1.
	if err := r.apply(config(2, with(with(all(1), 1, 2), 0, 2)...)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.sm.ExportForBackup(1, []int{2}); !errors.Is(err, kvpb.ErrStaleConfig) {
		t.Fatalf("past the configuration: %v", err)
	}
	if _, err := r.sm.ExportForBackup(2, []int{0}); !errors.Is(err, kvpb.ErrWrongGroup) {
		t.Fatalf("a shard on its way out: %v", err)
	}
	if _, err := r.sm.ExportForBackup(3, []int{2}); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("below the configuration: %v", err)
	}
}
