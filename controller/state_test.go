package controller

import (
	"errors"
	"testing"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
)

func join(client, seq uint64, groups map[uint64][]string) *controllerlogpb.Command {
	req := &controllerpb.JoinRequest{Session: &controllerpb.Session{ClientId: client, Seq: seq}}
	for _, id := range []uint64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9} {
		if a, ok := groups[id]; ok {
			req.Groups = append(req.Groups, &controllerpb.Group{Id: id, Addrs: a})
		}
	}
	return &controllerlogpb.Command{Op: &controllerlogpb.Command_Join{Join: req}}
}

func leave(client, seq uint64, force bool, gids ...uint64) *controllerlogpb.Command {
	return &controllerlogpb.Command{Op: &controllerlogpb.Command_Leave{Leave: &controllerpb.LeaveRequest{
		Gids: gids, Force: force, Session: &controllerpb.Session{ClientId: client, Seq: seq}}}}
}

func move(client, seq uint64, shard uint32, gid uint64) *controllerlogpb.Command {
	return &controllerlogpb.Command{Op: &controllerlogpb.Command_Move{Move: &controllerpb.MoveRequest{
		Shard: shard, Gid: gid, Session: &controllerpb.Session{ClientId: client, Seq: seq}}}}
}

func openCmd(client uint64) *controllerlogpb.Command {
	return &controllerlogpb.Command{Op: &controllerlogpb.Command_OpenSession{OpenSession: &controllerpb.OpenSessionRequest{ClientId: client}}}
}

// applyOpen applies cmd, first opening its session when cmd is the
// session's first request (sequence 1), as ctlclient does.
func applyOpen(s *State, cmd *controllerlogpb.Command) Result {
	if sess := sessionOf(cmd); sess.GetSeq() == 1 && sess.GetClientId() != 0 {
		open := openCmd(sessionOf(cmd).GetClientId())
		open.Stamp = cmd.GetStamp()
		s.Apply(open)
	}
	return s.Apply(cmd)
}

func initCmd(n uint32) *controllerlogpb.Command {
	return &controllerlogpb.Command{Op: &controllerlogpb.Command_Init{Init: &controllerlogpb.InitRequest{NumShards: n}}}
}

func TestStateCommands(t *testing.T) {
	var s State
	if r := applyOpen(&s, join(1, 1, map[uint64][]string{1: {"a"}})); !errors.Is(r.Err, controllerpb.ErrNotInitialized) {
		t.Fatalf("join before init: %v", r.Err)
	}
	if r := s.Apply(initCmd(0)); !errors.Is(r.Err, controllerpb.ErrInvalidShards) {
		t.Fatalf("init 0 shards: %v", r.Err)
	}
	if r := s.Apply(initCmd(MaxShards + 1)); !errors.Is(r.Err, controllerpb.ErrInvalidShards) {
		t.Fatalf("init too many shards: %v", r.Err)
	}
	s.Apply(initCmd(10))
	s.Apply(initCmd(20)) // ignored: the shard count never changes
	if s.NumShards() != 10 {
		t.Fatalf("shards %d", s.NumShards())
	}

	steps := []struct {
		name    string
		cmd     *controllerlogpb.Command
		wantErr error
		wantNum uint64
	}{
		{"a session never opened", join(9, 2, map[uint64][]string{1: {"a1", "a2"}}), rpcerr.ErrSessionExpired, 0},
		{"join 1", join(1, 1, map[uint64][]string{1: {"a1", "a2"}}), nil, 1},
		{"retry of join 1 is not applied again", join(1, 1, map[uint64][]string{1: {"a1", "a2"}}), nil, 1},
		{"join 2 and 3", join(2, 1, map[uint64][]string{2: {"b"}, 3: {"c"}}), nil, 2},
		{"rejoin with same addresses changes nothing", join(2, 2, map[uint64][]string{2: {"b"}}), nil, 2},
		{"older request of the client", join(2, 1, map[uint64][]string{9: {"z"}}), rpcerr.ErrStaleRequest, 0},
		{"rejoin with other addresses", join(2, 3, map[uint64][]string{2: {"x"}}), controllerpb.ErrGroupExists, 2},
		{"group 0", join(2, 4, map[uint64][]string{0: {"x"}}), controllerpb.ErrInvalidGroup, 2},
		{"no addresses", join(2, 5, map[uint64][]string{4: nil}), controllerpb.ErrInvalidGroup, 2},
		{"leave unknown", leave(3, 1, false, 9), controllerpb.ErrUnknownGroup, 2},
		{"move unknown shard", move(3, 2, 10, 1), controllerpb.ErrUnknownShard, 2},
		{"move to unknown group", move(3, 3, 0, 9), controllerpb.ErrUnknownGroup, 2},
		{"move", move(3, 4, 0, 3), nil, 3},
		{"leave 1", leave(3, 5, false, 1), nil, 4},
		{"leave all refused", leave(3, 6, false, 2, 3), controllerpb.ErrWouldOrphan, 4},
		{"leave all forced", leave(3, 7, true, 2, 3), nil, 5},
	}
	for _, st := range steps {
		r := applyOpen(&s, st.cmd)
		if !errors.Is(r.Err, st.wantErr) || (st.wantNum != 0 && r.ConfigNum != st.wantNum) {
			t.Fatalf("%s: got (%d, %v), want (%d, %v)", st.name, r.ConfigNum, r.Err, st.wantNum, st.wantErr)
		}
		latest, _ := s.Latest()
		if st.wantErr != nil && latest.Num != st.wantNum && st.wantNum != 0 {
			t.Fatalf("%s: a refused command created configuration %d", st.name, latest.Num)
		}
	}
	c3, _ := s.Query(3)
	if c3.Shards[0] != 3 {
		t.Fatalf("move did not place shard 0 on group 3: %v", c3.Shards)
	}
	c4, _ := s.Query(4)
	for sh, g := range c4.Shards {
		if g == 1 {
			t.Fatalf("shard %d still on departed group 1", sh)
		}
	}
	c5, _ := s.Query(-1)
	if c5.Num != 5 || len(c5.Groups) != 0 || c5.Shards[0] != 0 {
		t.Fatalf("forced leave-all: %+v", c5)
	}
	if c, _ := s.Query(99); c.Num != 5 {
		t.Fatalf("query above latest gave %d", c.Num)
	}
}

func TestSessionsExpireByStamp(t *testing.T) {
	var s State
	s.Apply(initCmd(4))
	c := join(7, 1, map[uint64][]string{1: {"a"}})
	c.Stamp = 1000
	applyOpen(&s, c)
	if _, ok := s.sessions[7]; !ok {
		t.Fatal("session not recorded")
	}
	later := move(8, 1, 0, 1)
	later.Stamp = 1000 + SessionTTL.Milliseconds() + 1
	applyOpen(&s, later)
	if _, ok := s.sessions[7]; ok {
		t.Fatal("idle session not expired")
	}
	if _, ok := s.sessions[8]; !ok {
		t.Fatal("fresh session expired")
	}
}

func TestNotInitializedIsNotRemembered(t *testing.T) {
	var s State
	s.Apply(openCmd(1))
	if r := applyOpen(&s, join(1, 1, map[uint64][]string{1: {"a"}})); !errors.Is(r.Err, controllerpb.ErrNotInitialized) {
		t.Fatal(r.Err)
	}
	s.Apply(initCmd(4))
	if r := applyOpen(&s, join(1, 1, map[uint64][]string{1: {"a"}})); r.Err != nil || r.ConfigNum != 1 {
		t.Fatalf("retry after init: %+v", r)
	}
}

// TestSessionsMustBeOpened: a change in a session the controller does not
// know is refused, even as its first request (it may retry a change applied
// before the session expired); opening is idempotent and never resets a
// session in use; sequence 0 is not a change.
func TestSessionsMustBeOpened(t *testing.T) {
	var s State
	s.Apply(initCmd(4))
	if r := s.Apply(join(5, 1, map[uint64][]string{1: {"a"}})); !errors.Is(r.Err, rpcerr.ErrSessionExpired) {
		t.Fatalf("change in an unopened session: %+v", r)
	}
	if c, _ := s.Latest(); c.Num != 0 {
		t.Fatalf("a refused change made configuration %d", c.Num)
	}
	s.Apply(openCmd(5))
	if r := s.Apply(join(5, 1, map[uint64][]string{1: {"a"}})); r.Err != nil || r.ConfigNum != 1 {
		t.Fatalf("first change: %+v", r)
	}
	s.Apply(openCmd(5)) // a late retry of the opening
	if r := s.Apply(join(5, 1, map[uint64][]string{1: {"a"}})); r.Err != nil || r.ConfigNum != 1 {
		t.Fatalf("retry of the first change after a repeated opening: %+v", r)
	}
	if r := s.Apply(leave(5, 0, false, 1)); !errors.Is(r.Err, rpcerr.ErrStaleRequest) {
		t.Fatalf("sequence 0: %+v", r)
	}
	if r := s.Apply(openCmd(0)); r.Err == nil {
		t.Fatal("a session without a client id was opened")
	}
}

// TestIncarnationKeptWithTheGroup: the incarnation a join records stays
// with the group through address changes and moves, goes with it when it
// leaves, and a join repeating a group with another incarnation is
// refused (two copies of one id).
func TestIncarnationKeptWithTheGroup(t *testing.T) {
	var s State
	s.Apply(initCmd(4))
	j := join(1, 1, map[uint64][]string{1: {"a"}, 2: {"b"}})
	j.GetJoin().Groups[0].Incarnation = 0xa
	if r := applyOpen(&s, j); r.Err != nil {
		t.Fatal(r.Err)
	}
	again := join(1, 2, map[uint64][]string{1: {"a"}})
	again.GetJoin().Groups[0].Incarnation = 0xb
	if r := s.Apply(again); !errors.Is(r.Err, controllerpb.ErrGroupExists) {
		t.Fatalf("join of group 1 as another incarnation: %v", r.Err)
	}
	set := &controllerlogpb.Command{Op: &controllerlogpb.Command_SetReplicas{SetReplicas: &controllerpb.SetReplicasRequest{
		Gid: 1, Addrs: []string{"a", "c"}, Session: &controllerpb.Session{ClientId: 1, Seq: 3}}}}
	for _, cmd := range []*controllerlogpb.Command{set, move(1, 4, 0, 2)} {
		if r := s.Apply(cmd); r.Err != nil {
			t.Fatal(r.Err)
		}
		if c, _ := s.Latest(); c.Incarnation(1) != 0xa || c.Incarnation(2) != 0 {
			t.Fatalf("configuration %d records %v", c.Num, c.Incarnations)
		}
	}
	if r := s.Apply(leave(1, 5, false, 1)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if c, _ := s.Latest(); len(c.Incarnations) != 0 {
		t.Fatalf("after the leave: %v", c.Incarnations)
	}
}

// TestJoinRaces: a join the leader checked that adds a group it did not
// check (the group left between the check and the apply) is refused as
// GROUP_NOT_READY, changing nothing; a group id that a configuration has
// without an incarnation is never given one (its old copy could not be
// told apart); a replica sync from another copy of an id is refused.
func TestJoinRaces(t *testing.T) {
	var s State
	s.Apply(initCmd(4))
	legacy := join(1, 1, map[uint64][]string{1: {"a"}, 2: {"b"}}) // before incarnations: none recorded
	legacy.GetJoin().Groups[1].Incarnation = 0x2
	if r := applyOpen(&s, legacy); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := s.Apply(leave(1, 2, false, 1, 2)); r.Err != nil && !errors.Is(r.Err, controllerpb.ErrWouldOrphan) {
		t.Fatal(r.Err)
	}
	if r := s.Apply(leave(1, 3, false, 1)); r.Err != nil {
		t.Fatal(r.Err)
	}
	before, _ := s.Latest()

	unchecked := join(1, 4, map[uint64][]string{1: {"a"}})
	unchecked.Checked = true
	if r := s.Apply(unchecked); !errors.Is(r.Err, controllerpb.ErrGroupNotReady) {
		t.Fatalf("checked join adding an unchecked group: %v", r.Err)
	}
	again := join(1, 5, map[uint64][]string{1: {"c"}})
	again.Checked = true
	again.GetJoin().Groups[0].Incarnation = 0xc
	if r := s.Apply(again); !errors.Is(r.Err, controllerpb.ErrGroupExists) {
		t.Fatalf("incarnation for an id used without one: %v", r.Err)
	}
	if after, _ := s.Latest(); after.Num != before.Num {
		t.Fatalf("refused joins made configuration %d", after.Num)
	}
	fresh := join(1, 6, map[uint64][]string{3: {"d"}})
	fresh.Checked = true
	fresh.GetJoin().Groups[0].Incarnation = 0xd
	if r := s.Apply(fresh); r.Err != nil {
		t.Fatal(r.Err)
	}
	set := func(seq, inc uint64) Result {
		return s.Apply(&controllerlogpb.Command{Op: &controllerlogpb.Command_SetReplicas{SetReplicas: &controllerpb.SetReplicasRequest{
			Gid: 3, Addrs: []string{"e"}, Incarnation: inc, Session: &controllerpb.Session{ClientId: 1, Seq: seq}}}})
	}
	if r := set(7, 0xe); !errors.Is(r.Err, controllerpb.ErrUnknownGroup) {
		t.Fatalf("replica sync of another copy: %v", r.Err)
	}
	if r := set(8, 0xd); r.Err != nil {
		t.Fatalf("replica sync of the group: %v", r.Err)
	}
	// A join the leader did not check because it names a joined group at
	// other addresses: refused for that, not as unchecked.
	malformed := join(1, 9, map[uint64][]string{1: {"x"}, 3: {"other"}})
	malformed.Checked = true
	if r := s.Apply(malformed); !errors.Is(r.Err, controllerpb.ErrGroupExists) {
		t.Fatalf("a checked join naming group 3 at other addresses: %v, want ErrGroupExists", r.Err)
	}
}
