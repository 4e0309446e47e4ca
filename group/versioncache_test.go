package group

import "testing"

// TestVersionCacheNeverOutlivesOtherChanges: the versions writes cache
// are forgotten whenever data may change other than by a write: a
// snapshot restored over the state (a stale cached version would number
// the next write from the old state), any other command, and an apply
// that failed before its batch committed.
func TestVersionCacheNeverOutlivesOtherChanges(t *testing.T) {
	key := keyIn(3, 0)
	a := newReplica(t, 1, Limits{})
	b := newReplica(t, 1, Limits{})
	for _, r := range []*replica{a, b} {
		if err := r.apply(config(1, all(1)...)); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); seq <= 2; seq++ {
		a.answer(put(key, "a", 7, seq))
	}
	for seq := uint64(1); seq <= 5; seq++ {
		b.answer(put(key, "b", 7, seq))
	}
	if len(a.sm.versions.versions) == 0 {
		t.Fatal("writes cached no version")
	}
	img, err := b.sm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.sm.Restore(img); err != nil {
		t.Fatal(err)
	}
	a.index = b.index // a's log goes on from the snapshot's point
	if res := a.answer(put(key, "c", 8, 1)); res.Version != 6 {
		t.Fatalf("a put after restoring a state where the key is at version 5: version %d, want 6", res.Version)
	}
	// Any command but a write empties the cache.
	if err := a.apply(config(2, all(1)...)); err != nil {
		t.Fatal(err)
	}
	if a.sm.versions.versions != nil {
		t.Fatalf("versions cached across a configuration: %v", a.sm.versions.versions)
	}
	if res := a.answer(put(key, "d", 8, 2)); res.Version != 7 {
		t.Fatalf("a put after a configuration: version %d, want 7", res.Version)
	}
}
