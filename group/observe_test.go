package group

import (
	"fmt"
	"testing"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// recorder is an Observer that keeps what it is told, as text.
type recorder struct{ seen []string }

func (r *recorder) Applied(index uint64, changes []Change, _ *Shards) {
	for _, c := range changes {
		switch c.Kind {
		case ChangeWrite:
			r.seen = append(r.seen, fmt.Sprintf("%s %s=%s v%d", kvpb.WriteOp_name[int32(c.Op)][9:], c.Key, c.Value, c.Version))
		case ChangeArrived:
			r.seen = append(r.seen, fmt.Sprintf("arrived %d in %d", c.Shard, c.ConfigNum))
		case ChangeLeft:
			r.seen = append(r.seen, fmt.Sprintf("left %d for %d", c.Shard, c.ConfigNum))
		}
		if c.Index > index {
			r.seen = append(r.seen, fmt.Sprintf("change at %d after the batch's %d", c.Index, index))
		}
	}
}

func (r *recorder) Restored(index uint64, _ Shards) {
	r.seen = append(r.seen, fmt.Sprintf("restored at %d", index))
}

func (r *recorder) take() string {
	s := fmt.Sprint(r.seen)
	r.seen = nil
	return s
}

// TestObserverSeesWhatChanged: the observer hears of every write that
// changed a key (with the value and version after it), and of nothing
// else a write does (a condition that failed, a delete of a missing key,
// a retry, a refusal); of a shard that leaves its group with the
// configuration it goes to, and of its arrival at the new owner.
func TestObserverSeesWhatChanged(t *testing.T) {
	g1, g2, c2 := twoGroups(t)
	o1, o2 := &recorder{}, &recorder{}
	g1.sm.Observe(o1)
	g2.sm.Observe(o2)
	if got := o1.take(); got != fmt.Sprintf("[restored at %d]", g1.sm.Applied()) {
		t.Fatalf("observing starts with: %s", got)
	}
	o2.take()
	key := keyIn(2, 0)
	g1.answer(put(key, "a", 7, 1))
	g1.answer(appendCmd(key, "b", 7, 2))
	g1.answer(appendCmd(key, "b", 7, 2))                          // a retry
	g1.answer(cond(put(key, "x", 7, 3), version(1), nil))         // does not hold
	g1.answer(write(kvpb.WriteOp_WRITE_OP_DELETE, key, "", 7, 4)) // deletes
	g1.answer(write(kvpb.WriteOp_WRITE_OP_DELETE, key, "", 7, 5)) // nothing to delete
	g1.answer(put(key, "c", 7, 6))
	want := fmt.Sprintf("[PUT %s=a v1 APPEND %s=ab v2 DELETE %s= v0 PUT %s=c v1]", key, key, key, key)
	if got := o1.take(); got != want {
		t.Fatalf("writes:\n got %s\nwant %s", got, want)
	}
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(2, c2...)); err != nil {
			t.Fatal(err)
		}
	}
	if got := o1.take(); got != "[left 2 for 2]" {
		t.Fatalf("old owner at configuration 2: %s", got)
	}
	if got := o2.take(); got != "[]" {
		t.Fatalf("new owner before the data: %s", got)
	}
	if err := g1.apply(handOver(2, 2)); err != nil {
		t.Fatal(err)
	}
	for i, c := range g1.export(2, 2) {
		if err := g2.apply(&grouppb.Command{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{
			ConfigNum: 2, Shard: 2, Chunk: uint64(i), Kvs: c.Kvs, Sessions: c.Sessions, Last: c.Last}}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := o2.take(); got != "[arrived 2 in 2]" {
		t.Fatalf("new owner after the data: %s", got)
	}
	g2.answer(put(key, "d", 7, 7))
	if got, want := o2.take(), fmt.Sprintf("[PUT %s=d v2]", key); got != want {
		t.Fatalf("new owner's write: %s, want %s", got, want)
	}
}

// TestObserverFollowsAGiveBack: a shard given back to its old owner
// without a handoff leaves the new owner, which gave up its pull, for the
// next configuration, and arrives again at the old owner in it: a watch
// that follows LEFT notices goes new owner → old owner.
func TestObserverFollowsAGiveBack(t *testing.T) {
	g1, g2, c2 := twoGroups(t)
	o1, o2 := &recorder{}, &recorder{}
	g1.sm.Observe(o1)
	g2.sm.Observe(o2)
	o1.take()
	o2.take()
	for _, r := range []*replica{g1, g2} {
		if err := r.apply(config(2, c2...)); err != nil {
			t.Fatal(err)
		}
	}
	if got := o1.take(); got != "[left 2 for 2]" {
		t.Fatalf("old owner at configuration 2: %s", got)
	}
	if err := g1.apply(config(3, all(1)...)); err != nil {
		t.Fatal(err)
	}
	if got := o1.take(); got != "[arrived 2 in 3]" {
		t.Fatalf("old owner given the shard back: %s", got)
	}
	if err := g2.apply(abandonPull(2, 2)); err != nil {
		t.Fatal(err)
	}
	if got := o2.take(); got != "[left 2 for 3]" {
		t.Fatalf("new owner giving its pull up: %s", got)
	}
}
