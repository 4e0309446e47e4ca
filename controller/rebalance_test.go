package controller

import (
	"cmp"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func counts(shards []uint64) map[uint64]int {
	c := map[uint64]int{}
	for _, g := range shards {
		c[g]++
	}
	return c
}

// minMoves is the fewest shards any even assignment over groups must move:
// every shard that can stay is one a group keeps up to its target, and the
// best targets give the larger share to the groups holding most.
func minMoves(before []uint64, groups []uint64) int {
	n, g := len(before), len(groups)
	c := counts(before)
	have := make([]int, 0, g)
	for _, gid := range groups {
		have = append(have, c[gid])
	}
	slices.SortFunc(have, func(a, b int) int { return cmp.Compare(b, a) })
	stay := 0
	for i, h := range have {
		t := n / g
		if i < n%g {
			t++
		}
		stay += min(h, t)
	}
	return n - stay
}

func checkBalanced(t *rapid.T, shards []uint64, groups []uint64) {
	if len(groups) == 0 {
		for s, g := range shards {
			if g != 0 {
				t.Fatalf("no groups, but shard %d is on %d", s, g)
			}
		}
		return
	}
	in := map[uint64]bool{}
	for _, g := range groups {
		in[g] = true
	}
	c := counts(shards)
	lo, hi := len(shards), 0
	for _, g := range groups {
		lo, hi = min(lo, c[g]), max(hi, c[g])
	}
	if hi-lo > 1 {
		t.Fatalf("unbalanced: max %d min %d over %d groups", hi, lo, len(groups))
	}
	for s, g := range shards {
		if !in[g] {
			t.Fatalf("shard %d orphaned on group %d", s, g)
		}
	}
}

func TestRebalanceProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 4096).Draw(t, "shards")
		shards := make([]uint64, n)
		var groups []uint64
		balanced := true // no Move since the last rebalance
		for step := 0; step < 12; step++ {
			before := slices.Clone(shards)
			op := rapid.IntRange(0, 2).Draw(t, "op")
			switch {
			case op == 0 || len(groups) == 0: // join
				k := rapid.IntRange(1, 40).Draw(t, "join count")
				added := map[uint64]bool{}
				for i := 0; i < k && len(groups) < 300; i++ {
					g := rapid.Uint64Range(1, 1000).Draw(t, "gid")
					if !slices.Contains(groups, g) {
						groups = append(groups, g)
						added[g] = true
					}
				}
				var moved []int
				shards, moved = rebalanceChecked(t, shards, groups)
				for _, s := range moved {
					if balanced && before[s] != 0 && !added[shards[s]] {
						t.Fatalf("join moved shard %d from %d to old group %d", s, before[s], shards[s])
					}
				}
				if want := minMoves(before, groups); len(moved) != want {
					t.Fatalf("join moved %d shards, the minimum is %d", moved, want)
				}
				balanced = true
			case op == 1: // leave
				k := rapid.IntRange(1, len(groups)).Draw(t, "leave count")
				perm := rapid.Permutation(groups).Draw(t, "leave order")
				leaving := map[uint64]bool{}
				for _, g := range perm[:k] {
					leaving[g] = true
				}
				groups = slices.DeleteFunc(groups, func(g uint64) bool { return leaving[g] })
				var moved []int
				shards, moved = rebalanceChecked(t, shards, groups)
				for _, s := range moved {
					if balanced && !leaving[before[s]] {
						t.Fatalf("leave moved shard %d off staying group %d", s, before[s])
					}
				}
				if len(groups) > 0 {
					if want := minMoves(before, groups); len(moved) != want {
						t.Fatalf("leave moved %d shards, the minimum is %d", moved, want)
					}
				}
				balanced = true
			default: // move one shard, no rebalance
				s := rapid.IntRange(0, n-1).Draw(t, "shard")
				shards[s] = rapid.SampledFrom(groups).Draw(t, "to")
				balanced = false
			}
		}
	})
}

// rebalanceChecked rebalances shards over groups (rebalanceShuffled),
// checks the result is balanced, and returns it with the shards it moved.
func rebalanceChecked(t *rapid.T, shards, groups []uint64) (after []uint64, moved []int) {
	after = rebalanceShuffled(t, shards, groups)
	checkBalanced(t, after, groups)
	for s := range after {
		if after[s] != shards[s] {
			moved = append(moved, s)
		}
	}
	return after, moved
}

// rebalanceShuffled rebalances with groups in a random order and checks the
// result does not depend on that order.
func rebalanceShuffled(t *rapid.T, shards, groups []uint64) []uint64 {
	sorted := slices.Sorted(slices.Values(groups))
	want := Rebalance(shards, sorted)
	if len(groups) > 0 {
		shuffled := rapid.Permutation(groups).Draw(t, "group order")
		if got := Rebalance(shards, shuffled); !slices.Equal(got, want) {
			t.Fatalf("group order changed the result")
		}
	}
	return want
}

func TestRebalanceExamples(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shards []uint64
		groups []uint64
		want   []uint64
	}{
		{"first join takes all", []uint64{0, 0, 0, 0}, []uint64{5}, []uint64{5, 5, 5, 5}},
		{"second join takes the high half", []uint64{1, 1, 1, 1}, []uint64{1, 2}, []uint64{1, 1, 2, 2}},
		{"uneven: larger holder keeps the extra", []uint64{1, 1, 1, 2, 2}, []uint64{1, 2}, []uint64{1, 1, 1, 2, 2}},
		{"more groups than shards", []uint64{1, 1}, []uint64{1, 2, 3}, []uint64{1, 2}},
		{"leave all", []uint64{1, 2}, nil, []uint64{0, 0}},
		{"departed group's shards spread", []uint64{1, 2, 3, 3}, []uint64{1, 2}, []uint64{1, 2, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Rebalance(tc.shards, tc.groups); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}
