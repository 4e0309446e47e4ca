package controller

import (
	"cmp"
	"slices"
)

// Rebalance returns a new assignment of shards (shards[i] is the group of
// shard i) over groups, following these rules:
//
//   - With no groups, every shard goes to group 0.
//   - Otherwise no shard stays on group 0 or on a group not in groups.
//   - Even: every group ends with ⌊n/g⌋ or ⌈n/g⌉ of the n shards; with more
//     groups than shards, the extra groups hold none.
//   - Which groups get ⌈n/g⌉: those that already hold the most, ties broken
//     by the smaller group id. So a group that has more keeps it.
//   - Minimal: a group keeps every shard it has up to its target. Only
//     shards of departed groups, of group 0, and a group's excess above its
//     target move. A join therefore only moves shards onto the new groups,
//     and a leave only moves the leaving groups' shards.
//   - Deterministic: excess shards are taken from the highest shard
//     numbers of each group; moving shards are handed out in ascending order
//     to the groups below target, ordered by fewest shards then smallest id.
//
// The input is not modified.
func Rebalance(shards []uint64, groups []uint64) []uint64 {
	return rebalance(shards, groups, nil)
}

// rebalance is Rebalance, except that no pinned shard (pinned[s]) leaves
// its group, even when that group holds more than its target: it releases
// its other shards instead, and stays above target only when its pinned
// shards alone exceed it.
func rebalance(shards []uint64, groups []uint64, pinned []bool) []uint64 {
	out := slices.Clone(shards)
	if len(groups) == 0 {
		for i := range out {
			out[i] = 0
		}
		return out
	}
	gids := slices.Clone(groups)
	slices.Sort(gids)
	gids = slices.Compact(gids)

	owned := make(map[uint64][]int, len(gids)) // group -> its shards, ascending
	for _, g := range gids {
		owned[g] = nil
	}
	var free []int
	for s, g := range out {
		if _, ok := owned[g]; ok && g != 0 {
			owned[g] = append(owned[g], s)
		} else {
			free = append(free, s)
		}
	}
	target := targets(out, gids, owned, pinned)

	// Release each group's excess, highest shard numbers first (pinned
	// shards stay).
	for _, gid := range gids {
		excess := len(owned[gid]) - target[gid]
		if excess <= 0 {
			continue
		}
		var keep []int
		for i := len(owned[gid]) - 1; i >= 0; i-- {
			if s := owned[gid][i]; excess > 0 && (pinned == nil || !pinned[s]) {
				free = append(free, s)
				excess--
			} else {
				keep = append(keep, s)
			}
		}
		owned[gid] = keep
	}
	slices.Sort(free)
	fill(out, free, gids, owned, target)
	return out
}

// targets gives each group (gids, sorted) its share of the len(shards)
// shards: the groups holding most (owned) get the larger share, those
// with more than the smaller share pinned first, ties to the smaller id.
func targets(shards []uint64, gids []uint64, owned map[uint64][]int, pinned []bool) map[uint64]int {
	n, g := len(shards), len(gids)
	pins := map[uint64]int{}
	for s, gid := range shards {
		if pinned != nil && pinned[s] {
			pins[gid]++
		}
	}
	overPinned := func(gid uint64) bool { return pins[gid] > n/g }
	order := slices.Clone(gids)
	slices.SortStableFunc(order, func(a, b uint64) int {
		if oa, ob := overPinned(a), overPinned(b); oa != ob {
			if oa {
				return -1
			}
			return 1
		}
		if d := len(owned[b]) - len(owned[a]); d != 0 {
			return d
		}
		return cmp.Compare(a, b)
	})
	target := make(map[uint64]int, g)
	for i, gid := range order {
		target[gid] = n / g
		if i < n%g {
			target[gid]++
		}
	}
	return target
}

// fill hands the free shards (ascending) to the groups below target,
// fewest shards first, then smallest id, recording each in out. While a
// shard is free some group is below target: the targets add up to the
// shard count.
func fill(out []uint64, free []int, gids []uint64, owned map[uint64][]int, target map[uint64]int) {
	for len(free) > 0 {
		var best uint64
		bestHas := -1
		for _, gid := range gids {
			has := len(owned[gid])
			if has < target[gid] && (bestHas < 0 || has < bestHas) {
				best, bestHas = gid, has
			}
		}
		s := free[0]
		free = free[1:]
		owned[best] = append(owned[best], s)
		out[s] = best
	}
}
