package group

import (
	"errors"
	"testing"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
)

func setIncarnation(inc uint64) *grouppb.Command {
	return &grouppb.Command{Op: &grouppb.Command_SetIncarnation{SetIncarnation: &grouppb.SetIncarnation{Incarnation: inc}}}
}

// configWith is config(num, owners...) recording incarnations (group ->
// incarnation).
func configWith(num uint64, incarnations map[uint64]uint64, owners ...uint64) *grouppb.Command {
	cmd := config(num, owners...)
	c := controller.ConfigFromProto(cmd.GetInstall().GetConfig())
	c.Incarnations = incarnations
	cmd.GetInstall().Config = c.ToProto()
	return cmd
}

// TestFirstIncarnationIsKept: the first incarnation applied is the
// group's for good, across a restart and a snapshot; 0 is malformed.
func TestFirstIncarnationIsKept(t *testing.T) {
	afterRestartAndSnapshot(t, 1, func(r *replica) {
		if err := r.apply(setIncarnation(0)); !errors.Is(err, rpcerr.ErrMalformed) || r.sm.Incarnation() != 0 {
			t.Fatalf("incarnation 0: %v, now %x", err, r.sm.Incarnation())
		}
		for _, inc := range []uint64{0xaa, 0xbb} { // two leaders drew one each
			if err := r.apply(setIncarnation(inc)); err != nil {
				t.Fatal(err)
			}
		}
		if got := r.sm.Incarnation(); got != 0xaa {
			t.Fatalf("incarnation %x, want the first applied, aa", got)
		}
	}, func(sm *StateMachine, what string) {
		if got := sm.Incarnation(); got != 0xaa {
			t.Fatalf("%s replica's incarnation %x, want aa", what, got)
		}
	})
}

// TestAnotherIncarnationsConfiguration: two copies of group 1 apply the
// same configurations, which record copy a's incarnation. Copy a serves
// the shards given to group 1; copy b (another incarnation, or none yet)
// installs every configuration as if group 1 were not in it: it serves
// nothing, pulls nothing, and answers writes WRONG_GROUP. A configuration
// recording no incarnation (made before incarnations existed) is every
// copy's.
func TestAnotherIncarnationsConfiguration(t *testing.T) {
	a, b, none := newReplica(t, 1, Limits{}), newReplica(t, 1, Limits{}), newReplica(t, 1, Limits{})
	for r, inc := range map[*replica]uint64{a: 0xa, b: 0xb} {
		if err := r.apply(setIncarnation(inc)); err != nil {
			t.Fatal(err)
		}
	}
	rec := map[uint64]uint64{1: 0xa, 2: 0x2}
	c1 := with(all(1), 5, 2)
	c2 := with(c1, 3, 2)
	k0 := keyIn(0, 0)
	for _, r := range []*replica{a, b, none} {
		if err := r.apply(configWith(1, rec, c1...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.apply(put(k0, "v", 1, 1)); err != nil {
		t.Fatalf("the recorded copy: %v", err)
	}
	for name, r := range map[string]*replica{"another incarnation": b, "no incarnation yet": none} {
		if err := r.apply(put(k0, "v", 1, 1)); !errors.Is(err, kvpb.ErrWrongGroup) {
			t.Fatalf("%s took a write: %v", name, err)
		}
		v := r.sm.View()
		if _, in := v.Config.Groups[1]; in {
			t.Fatalf("%s installed configuration 1 with its id: %v", name, v.Config.Groups)
		}
		for s, sh := range v.Shards {
			if sh.State != Absent {
				t.Fatalf("%s: shard %d is %v", name, s, sh.State)
			}
		}
		// The next configuration moves shard 3 from group 1 to group 2:
		// nothing of it is held here, so nothing blocks it.
		if !r.sm.CanInstall(controller.ConfigFromProto(configWith(2, rec, c2...).GetInstall().GetConfig())) {
			t.Fatalf("%s cannot install configuration 2", name)
		}
		if err := r.apply(configWith(2, rec, c2...)); err != nil {
			t.Fatal(err)
		}
		if got := r.sm.View().Shards[3].State; got != Absent {
			t.Fatalf("%s: shard 3 is %v after configuration 2", name, got)
		}
	}

	// A copy that serves shards is never given another incarnation's
	// configuration by a controller (the id leaves first): it refuses
	// one, and keeps its shards.
	if err := a.apply(configWith(2, map[uint64]uint64{1: 0xb, 2: 0x2}, c2...)); !errors.Is(err, rpcerr.ErrMalformed) {
		t.Fatalf("serving copy given another incarnation's configuration: %v", err)
	}
	if v, _ := a.get(k0); v != "v" || a.sm.View().Config.Num != 1 {
		t.Fatalf("after the refusal: %q at configuration %d", v, a.sm.View().Config.Num)
	}

	// No incarnation recorded: every copy's.
	legacy := newReplica(t, 1, Limits{})
	if err := legacy.apply(setIncarnation(0xc)); err != nil {
		t.Fatal(err)
	}
	if err := legacy.apply(config(1, c1...)); err != nil {
		t.Fatal(err)
	}
	if err := legacy.apply(put(k0, "v", 1, 1)); err != nil {
		t.Fatalf("configuration without incarnations: %v", err)
	}
}

// TestAnotherIncarnationAfterLeaving: a copy that left (configuration 2
// gives its shards away) and still holds them for their new owner is
// given a configuration recording another copy of its id: the install
// waits for the handoff like any other, and is not refused.
func TestAnotherIncarnationAfterLeaving(t *testing.T) {
	a := newReplica(t, 1, Limits{})
	if err := a.apply(setIncarnation(0xa)); err != nil {
		t.Fatal(err)
	}
	if err := a.apply(configWith(1, map[uint64]uint64{1: 0xa}, all(1)...)); err != nil {
		t.Fatal(err)
	}
	if err := a.apply(configWith(2, map[uint64]uint64{2: 0x2}, all(2)...)); err != nil {
		t.Fatal(err)
	}
	c3 := controller.ConfigFromProto(configWith(3, map[uint64]uint64{1: 0xb, 2: 0x2}, with(all(2), 0, 1)...).GetInstall().GetConfig())
	if a.sm.CanInstall(c3) {
		t.Fatal("configuration 3 installable while every shard is held for group 2")
	}
	if err := a.apply(configWith(3, map[uint64]uint64{1: 0xb, 2: 0x2}, with(all(2), 0, 1)...)); !errors.Is(err, kvpb.ErrNotReady) {
		t.Fatalf("configuration 3 while handing over: %v, want NOT_READY", err)
	}
}
