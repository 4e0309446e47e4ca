package controller

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
)

// TestLeaveGivesBack: a leave gives the shards the leaving group gained in
// the latest configuration back to their owner in the one before, when it
// stays; everything else is rebalanced as usual.
func TestLeaveGivesBack(t *testing.T) {
	var s State
	s.Apply(initCmd(12))
	seq := uint64(0)
	do := func(cmd func(seq uint64) *controllerlogpb.Command) Config {
		t.Helper()
		seq++
		r := applyOpen(&s, cmd(seq))
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		cfg, _ := s.Query(int64(r.ConfigNum))
		return cfg
	}
	joinG := func(gids ...uint64) func(uint64) *controllerlogpb.Command {
		return func(seq uint64) *controllerlogpb.Command {
			m := map[uint64][]string{}
			for _, g := range gids {
				m[g] = []string{"a"}
			}
			return join(1, seq, m)
		}
	}
	leaveG := func(gids ...uint64) func(uint64) *controllerlogpb.Command {
		return func(seq uint64) *controllerlogpb.Command { return leave(1, seq, false, gids...) }
	}
	even := func(cfg Config) {
		t.Helper()
		c := counts(cfg.Shards)
		lo, hi := len(cfg.Shards), 0
		for _, g := range cfg.GroupIDs() {
			lo, hi = min(lo, c[g]), max(hi, c[g])
		}
		if hi-lo > 1 {
			t.Fatalf("configuration %d uneven: %v", cfg.Num, cfg.Shards)
		}
	}

	three := do(joinG(1, 2, 3))
	do(joinG(4))
	// The case: join a group, then leave it: back as before.
	if back := do(leaveG(4)); !slices.Equal(back.Shards, three.Shards) {
		t.Fatalf("leave after join: %v, before the join %v", back.Shards, three.Shards)
	}

	// Two join at once, one leaves: its shards go back to where they came
	// from, and the owners shed others to keep the balance.
	two := do(joinG(4, 5))
	after := do(leaveG(4))
	even(after)
	for sh, g := range two.Shards {
		if g == 4 && after.Shards[sh] != three.Shards[sh] {
			t.Fatalf("shard %d of the leaving group went to %d, not back to %d", sh, after.Shards[sh], three.Shards[sh])
		}
	}
	do(leaveG(5))

	// A change between the join and the leave: the leaving group's shards
	// are no longer the latest configuration's gains, and are rebalanced.
	do(joinG(4))
	mid := do(joinG(6))
	end := do(leaveG(4))
	even(end)
	for sh, g := range mid.Shards {
		if g != 4 && end.Shards[sh] != g {
			t.Fatalf("shard %d moved off staying group %d", sh, g)
		}
	}

	// A moved shard goes back when its new owner leaves.
	before := do(leaveG(6))
	var sh int
	for sh = range before.Shards {
		if before.Shards[sh] == 1 {
			break
		}
	}
	do(func(seq uint64) *controllerlogpb.Command { return move(1, seq, uint32(sh), 3) })
	if back := do(leaveG(3)); back.Shards[sh] != 1 {
		t.Fatalf("moved shard %d went to %d when its new owner left, not back to 1", sh, back.Shards[sh])
	}

	// A leave whose previous owner leaves too: rebalanced over the rest.
	do(joinG(7))
	end = do(leaveG(1, 7))
	even(end)
	if slices.Contains(end.Shards, 1) || slices.Contains(end.Shards, 7) {
		t.Fatalf("shards left on departed groups: %v", end.Shards)
	}
}

// TestJoinRefusalIsRemembered: a join proposed with the leader's refusal
// is refused with it, its session remembers it, and a retry of a join
// already applied keeps its outcome.
func TestJoinRefusalIsRemembered(t *testing.T) {
	var s State
	s.Apply(initCmd(4))
	refused := func(seq uint64, code uint32) *controllerlogpb.Command {
		cmd := join(9, seq, map[uint64][]string{2: {"b:1"}})
		cmd.Refusal = &controllerlogpb.CheckRefusal{Code: code, Reason: "group 2: b:1 did not answer"}
		return cmd
	}
	r := applyOpen(&s, join(9, 1, map[uint64][]string{1: {"a:1"}}))
	if r.Err != nil || r.ConfigNum != 1 {
		t.Fatalf("join: %+v", r)
	}
	if len(s.JoinToCheck(join(9, 1, map[uint64][]string{1: {"a:1"}}).GetJoin())) != 0 {
		t.Fatal("a retry of an applied join is checked")
	}
	if g := s.JoinToCheck(join(9, 2, map[uint64][]string{1: {"a:1"}, 2: {"b:1"}}).GetJoin()); len(g) != 1 || g[0].GetId() != 2 {
		t.Fatalf("groups to check: %v", g)
	}
	if g := s.JoinToCheck(join(9, 2, map[uint64][]string{1: {"other:1"}, 2: {"b:1"}}).GetJoin()); len(g) != 0 {
		t.Fatalf("a join the state machine refuses is checked: %v", g)
	}
	if r := s.Apply(refused(1, RefusalCode(controllerpb.ErrReplicaUnreachable))); r.Err != nil || r.ConfigNum != 1 {
		t.Fatalf("refusal of a request already applied: %+v", r)
	}
	r = s.Apply(refused(2, RefusalCode(controllerpb.ErrReplicaUnreachable)))
	if !errors.Is(r.Err, controllerpb.ErrReplicaUnreachable) || !strings.Contains(r.Err.Error(), "b:1 did not answer") || r.ConfigNum != 1 {
		t.Fatalf("refused join: %+v", r)
	}
	if r := s.Apply(join(9, 2, map[uint64][]string{2: {"b:1"}})); !errors.Is(r.Err, controllerpb.ErrReplicaUnreachable) {
		t.Fatalf("retry of the refused join: %+v", r)
	}
	if r := s.Apply(refused(3, RefusalCode(controllerpb.ErrUnknownShard))); !errors.Is(r.Err, rpcerr.ErrMalformed) {
		t.Fatalf("refusal with a code that is not a check's: %+v", r)
	}
	if cfg, _ := s.Latest(); cfg.Num != 1 {
		t.Fatalf("refusals created configuration %d", cfg.Num)
	}
}

// TestPinnedRebalanceProperties: pinned shards never move; every shard
// ends on a group; the groups are even unless pinned shards make it
// impossible; without pins the result is Rebalance's.
func TestPinnedRebalanceProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 300).Draw(t, "shards")
		groups := rapid.SliceOfNDistinct(rapid.Uint64Range(1, 20), 1, 12, rapid.ID).Draw(t, "groups")
		shards := make([]uint64, n)
		pinned := make([]bool, n)
		for s := range shards {
			shards[s] = rapid.Uint64Range(0, 22).Draw(t, "owner")
			pinned[s] = slices.Contains(groups, shards[s]) && rapid.IntRange(0, 3).Draw(t, "pin") == 0
		}
		out := rebalance(shards, groups, pinned)
		c := counts(out)
		pins := map[uint64]int{}
		for s, g := range out {
			if !slices.Contains(groups, g) {
				t.Fatalf("shard %d on group %d, not in %v", s, g, groups)
			}
			if pinned[s] {
				pins[g]++
				if g != shards[s] {
					t.Fatalf("pinned shard %d moved %d -> %d", s, shards[s], g)
				}
			}
		}
		lo, hi := n, 0
		for _, g := range groups {
			lo, hi = min(lo, c[g]), max(hi, c[g])
		}
		if hi-lo > 1 {
			// Needed only when some group has more pinned than the larger
			// share, or more groups need the larger share than there are.
			floor, ceil := n/len(groups), (n+len(groups)-1)/len(groups)
			over, needCeil := false, 0
			for _, g := range groups {
				over = over || pins[g] > ceil
				if pins[g] > floor {
					needCeil++
				}
			}
			if !over && needCeil <= n%len(groups) {
				t.Fatalf("unbalanced without need: %v (pinned %v)", c, pins)
			}
		}
		if !slices.Contains(pinned, true) && !slices.Equal(out, Rebalance(shards, groups)) {
			t.Fatal("no pins, yet not Rebalance's result")
		}
	})
}
