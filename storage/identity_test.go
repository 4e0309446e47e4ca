package storage

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

func TestEnsureIdentity(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir, Options{})
	defer e.Close()
	r := Replica{Group: 0, ID: 1}
	one := map[uint64]string{1: "a:1"}
	three := map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1"}
	cid := ClusterIDFor("shardkv", one)
	if cid == ClusterIDFor("shardkv", three) || cid == ClusterIDFor("other", one) {
		t.Fatal("cluster ids of different memberships or tokens collide")
	}

	// Empty data told it is part of an existing cluster: refused.
	if _, err := e.EnsureIdentity(r, Identity{ClusterID: cid, Peers: one}, ClusterExisting); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("existing with empty data: %v", err)
	}
	got, err := e.EnsureIdentity(r, Identity{ClusterID: cid, Peers: one}, ClusterNew)
	if err != nil || got.ClusterID != cid {
		t.Fatalf("first start: %v %v", got, err)
	}
	// The same flags again, and "existing" now that data exists.
	for _, st := range []ClusterState{ClusterNew, ClusterExisting} {
		if _, err := e.EnsureIdentity(r, Identity{ClusterID: cid, Peers: one}, st); err != nil {
			t.Fatalf("restart (%s): %v", st, err)
		}
	}
	// Issue 10's repro: restarted with a larger membership.
	_, err = e.EnsureIdentity(r, Identity{ClusterID: ClusterIDFor("shardkv", three), Peers: three}, ClusterNew)
	if !errors.Is(err, ErrIdentityMismatch) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "1=a:1,2=b:1,3=c:1") {
		t.Fatalf("restart with other peers: %v", err)
	}
	_, err = e.EnsureIdentity(r, Identity{ClusterID: cid, Peers: three}, ClusterNew)
	if !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("restart with other peers, same cluster: %v", err)
	}
	// Pointed at another cluster.
	if _, err := e.EnsureIdentity(r, Identity{ClusterID: cid + 1, Peers: one}, ClusterNew); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("another cluster: %v", err)
	}
	// A group replica restarts without knowing the cluster id: the stored one.
	if got, err := e.EnsureIdentity(r, Identity{Peers: one}, ClusterNew); err != nil || got.ClusterID != cid {
		t.Fatalf("restart without a cluster id: %v %v", got, err)
	}

	// Data from before identities were stored is of an older format: its
	// log would be misread (write operations were renumbered), so it is
	// refused, never adopted.
	legacy := Replica{Group: 4, ID: 2}
	if err := e.DB().Set(legacy.hardStateKey(), []byte{}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := e.EnsureIdentity(legacy, Identity{ClusterID: cid, Peers: three}, ClusterExisting); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("legacy data: %v", err)
	}
	// So is an identity of another format.
	old := Replica{Group: 5, ID: 1}
	if err := e.DB().Set(old.identityKey(), []byte(`{"cluster_id":1,"peers":{"1":"a:1"}}`), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if _, err := e.EnsureIdentity(old, Identity{ClusterID: 1, Peers: one}, ClusterExisting); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("identity of format 1: %v", err)
	}
	// And format 2, whose stored values had no versions: read as a later
	// format, every value would lose its first bytes to a version. And
	// format 3, whose replicas ignore group incarnations: one beside
	// replicas that apply them would diverge from them.
	for format, gid := range map[int]uint64{2: 6, 3: 7} {
		r := Replica{Group: gid, ID: 1}
		if err := e.DB().Set(r.identityKey(), fmt.Appendf(nil, `{"cluster_id":1,"peers":{"1":"a:1"},"format":%d}`, format), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		if _, err := e.EnsureIdentity(r, Identity{ClusterID: 1, Peers: one}, ClusterExisting); !errors.Is(err, ErrIdentityMismatch) ||
			!strings.Contains(err.Error(), fmt.Sprintf("data format %d; this version reads format 4", format)) {
			t.Fatalf("identity of format %d: %v", format, err)
		}
	}
	if id, _, _ := e.LoadIdentity(r); id.Format != DataFormat {
		t.Fatalf("a new identity records format %d, want %d", id.Format, DataFormat)
	}
}

// TestIdentityFounders: a founding replica records its first peers as
// the founders; one that joined a running group records them when it
// learns them (SetFounders), and until then guesses its first peers less
// itself; a restart with the members in force as its peers does not
// change them, and data written before founders were recorded falls back
// to the peers.
func TestIdentityFounders(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{})
	defer e.Close()
	three := map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1"}
	replaced := map[uint64]string{1: "a:1", 2: "b:1", 4: "d:1"}
	cid := ClusterIDFor("shardkv", three)
	founder, joiner := Replica{Group: 1, ID: 1}, Replica{Group: 1, ID: 4}
	id, err := e.EnsureIdentity(founder, Identity{ClusterID: cid, Peers: three}, ClusterNew)
	if err != nil {
		t.Fatal(err)
	}
	if got := id.Founders(founder.ID); !slices.Equal(got, []uint64{1, 2, 3}) || id.Joined || !slices.Equal(id.FoundingVoters, got) {
		t.Fatalf("founding replica: founders %v, recorded %v, joined %v", got, id.FoundingVoters, id.Joined)
	}
	id, err = e.EnsureIdentity(joiner, Identity{ClusterID: cid, Peers: replaced}, ClusterJoin)
	if err != nil {
		t.Fatal(err)
	}
	if got := id.Founders(joiner.ID); !slices.Equal(got, []uint64{1, 2}) || !id.Joined {
		t.Fatalf("joined replica: founders %v, joined %v", got, id.Joined)
	}
	if f, ok := id.KnownFounders(); ok {
		t.Fatalf("a joined replica knows founders %v before it learned them", f)
	}
	// It learns them (raftnode: from its leader's snapshot); they survive
	// a reload and a change of members.
	if err := e.SetFounders(joiner, []uint64{3, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := e.SetMembers(joiner, replaced, nil); err != nil {
		t.Fatal(err)
	}
	id, err = e.EnsureIdentity(joiner, Identity{ClusterID: cid, Peers: replaced}, ClusterExisting)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := id.KnownFounders(); !ok || !slices.Equal(f, []uint64{1, 2, 3}) || !slices.Equal(id.Founders(joiner.ID), f) {
		t.Fatalf("joined replica after learning the founders: %v %v, Founders %v", f, ok, id.Founders(joiner.ID))
	}
	// Identities written before founders were recorded: a founding
	// replica's are its peers; a joined one's, its peers less itself.
	for _, tc := range []struct {
		json  string
		known bool
		want  []uint64
	}{
		{`{"cluster_id":1,"peers":{"1":"a:1","2":"b:1","3":"c:1"},"format":3}`, true, []uint64{1, 2, 3}},
		{`{"cluster_id":1,"peers":{"2":"b:1","3":"c:1","4":"d:1","5":"e:1"},"format":3,"joined":true}`, false, []uint64{2, 3, 4}},
	} {
		old := Replica{Group: 9, ID: 5}
		if err := e.DB().Set(old.identityKey(), []byte(tc.json), pebble.Sync); err != nil {
			t.Fatal(err)
		}
		id, _, err := e.LoadIdentity(old)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := id.KnownFounders(); ok != tc.known || !slices.Equal(id.Founders(old.ID), tc.want) {
			t.Fatalf("%s: known %v, founders %v; want %v, %v", tc.json, ok, id.Founders(old.ID), tc.known, tc.want)
		}
	}
	// The founder, after the replacement, restarted with the members in
	// force.
	if err := e.SetMembers(founder, replaced, nil); err != nil {
		t.Fatal(err)
	}
	id, err = e.EnsureIdentity(founder, Identity{ClusterID: cid, Peers: replaced}, ClusterExisting)
	if err != nil {
		t.Fatal(err)
	}
	if got := id.Founders(founder.ID); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("founding replica restarted with the members in force: founders %v", got)
	}
}

// TestReplicasListsIdentities: a node lists the replicas it hosts from
// their stored identities, whatever raft state lies around them.
func TestReplicasListsIdentities(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{})
	defer e.Close()
	if got, err := e.Replicas(); err != nil || len(got) != 0 {
		t.Fatalf("empty engine: %v %v", got, err)
	}
	peers := map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1"}
	want := []Replica{{Group: 1, ID: 2}, {Group: 3, ID: 1}, {Group: 1 << 40, ID: 3}}
	for _, r := range want {
		if _, err := e.EnsureIdentity(r, Identity{ClusterID: 7, Peers: peers}, ClusterNew); err != nil {
			t.Fatal(err)
		}
		// Raft state after the identity key: skipped over, not listed.
		if err := e.db.Set(r.logKey(5), []byte("x"), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	// A replica with raft state and no identity (tests start some so) is not hosted.
	if err := e.db.Set(Replica{Group: 2, ID: 1}.hardStateKey(), []byte("x"), pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	got, err := e.Replicas()
	if err != nil || len(got) != len(want) {
		t.Fatalf("replicas: %v %v, want %v", got, err, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("replicas: %v, want %v", got, want)
		}
	}
}

// TestDropReplica: a dropped replica's identity, raft state and state
// machine are gone, the engine no longer lists it, and its neighbours
// (the same group's other ids, other groups) keep everything.
func TestDropReplica(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{})
	defer e.Close()
	peers := map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1"}
	drop, keep := Replica{Group: 2, ID: 2}, []Replica{{Group: 1, ID: 2}, {Group: 2, ID: 3}, {Group: 3, ID: 1}}
	for _, r := range append([]Replica{drop}, keep...) {
		if _, err := e.EnsureIdentity(r, Identity{ClusterID: 7, Peers: peers}, ClusterNew); err != nil {
			t.Fatal(err)
		}
		for _, k := range [][]byte{r.logKey(5), r.hardStateKey(), r.StateKey('x')} {
			if err := e.db.Set(k, []byte("x"), pebble.NoSync); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.DropReplica(drop); err != nil {
		t.Fatal(err)
	}
	got, err := e.Replicas()
	if err != nil || len(got) != len(keep) {
		t.Fatalf("replicas after the drop: %v %v, want %v", got, err, keep)
	}
	for _, k := range [][]byte{drop.logKey(5), drop.hardStateKey(), drop.StateKey('x'), drop.identityKey()} {
		if _, ok, err := Get(e.db, k); err != nil || ok {
			t.Fatalf("%q after the drop: present %v, %v", k, ok, err)
		}
	}
	for _, r := range keep {
		for _, k := range [][]byte{r.logKey(5), r.hardStateKey(), r.StateKey('x'), r.identityKey()} {
			if _, ok, err := Get(e.db, k); err != nil || !ok {
				t.Fatalf("%s lost %q: %v", r, k, err)
			}
		}
		if gone, err := e.Unhosted(r); err != nil || gone {
			t.Fatalf("%s unhosted: %v, %v", r, gone, err)
		}
	}
	// The drop is remembered until the replica is hosted again.
	if gone, err := e.Unhosted(drop); err != nil || !gone {
		t.Fatalf("dropped replica not recorded as unhosted: %v, %v", gone, err)
	}
	if _, err := e.EnsureIdentity(drop, Identity{ClusterID: 7, Peers: peers}, ClusterJoin); err != nil {
		t.Fatal(err)
	}
	if gone, err := e.Unhosted(drop); err != nil || gone {
		t.Fatalf("hosted again, still recorded as unhosted: %v, %v", gone, err)
	}
}

// TestFoundingToken: the founders of a copy created by `admin join
// --create` record the token of the members it gave them, which a copy
// founded otherwise (other addresses, another group id or cluster) does
// not share; founders started by flags, who may see each other at other
// addresses, derive one from their ids alone, the same whatever addresses
// each was given; a replica that joined keeps the token it was given (its
// leader's) through reloads and membership changes.
func TestFoundingToken(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{})
	defer e.Close()
	three := map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1"}
	cid := ClusterIDFor("shardkv", three)
	token := FoundingTokenFor(cid, 2, three)
	for name, other := range map[string]uint64{
		"another address": FoundingTokenFor(cid, 2, map[uint64]string{1: "a:1", 2: "d:1", 3: "e:1"}),
		"another id":      FoundingTokenFor(cid, 2, map[uint64]string{1: "a:1", 2: "b:1", 4: "c:1"}),
		"another group":   FoundingTokenFor(cid, 3, three),
		"another cluster": FoundingTokenFor(cid+1, 2, three),
		"flags":           (Identity{ClusterID: cid, Peers: three}).FoundingToken(2),
	} {
		if other == token || other == 0 {
			t.Errorf("a copy founded with %s has token %x, the first %x", name, other, token)
		}
	}
	for id := uint64(1); id <= 3; id++ {
		ident, err := e.EnsureIdentity(Replica{Group: 2, ID: id}, Identity{ClusterID: cid, Peers: three, Token: token}, ClusterNew)
		if err != nil {
			t.Fatal(err)
		}
		if got := ident.FoundingToken(2); got != token {
			t.Fatalf("founder %d: token %x, want %x", id, got, token)
		}
	}
	// Founders by flags: each sees the others behind its own proxies.
	viaProxies := map[uint64]string{1: "a:1", 2: "p:2", 3: "p:3"}
	for id := uint64(1); id <= 3; id++ {
		ident, err := e.EnsureIdentity(Replica{Group: 3, ID: id}, Identity{ClusterID: cid, Peers: map[uint64]string{1: "q:1", 2: "b:1", 3: "q:3"}}, ClusterNew)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ident.FoundingToken(3), (Identity{ClusterID: cid, Peers: viaProxies}).FoundingToken(3); got != want || got == 0 {
			t.Fatalf("founder %d by flags: token %x, another founder's %x", id, got, want)
		}
	}
	joiner := Replica{Group: 2, ID: 4}
	withJoiner := map[uint64]string{1: "a:1", 2: "b:1", 3: "c:1", 4: "d:1"}
	if _, err := e.EnsureIdentity(joiner, Identity{ClusterID: cid, Peers: withJoiner, Token: token}, ClusterJoin); err != nil {
		t.Fatal(err)
	}
	if err := e.SetMembers(joiner, map[uint64]string{1: "a:1", 2: "b:1", 4: "d:1"}, []uint64{3}); err != nil {
		t.Fatal(err)
	}
	ident, _, err := e.LoadIdentity(joiner)
	if err != nil {
		t.Fatal(err)
	}
	if got := ident.FoundingToken(2); got != token {
		t.Fatalf("joined replica: token %x, want its leader's %x", got, token)
	}
	// Joined before tokens were kept: none known, which every copy accepts.
	if got := (Identity{ClusterID: cid, Peers: withJoiner, Joined: true}).FoundingToken(2); got != 0 {
		t.Fatalf("joined replica without a recorded token: %x, want 0", got)
	}
}

// TestRecordHeard: the peers a replica heard from are kept apart from its
// raft state (a replica with only them stored has none) and dropped with
// the replica.
func TestRecordHeard(t *testing.T) {
	e := openEngine(t, t.TempDir(), Options{})
	defer e.Close()
	r := Replica{Group: 3, ID: 1}
	for _, peer := range []uint64{3, 2, 3} {
		if err := e.RecordHeard(r, peer); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := e.Heard(r); err != nil || !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("heard %v (%v), want 2 3", got, err)
	}
	if got, err := e.Heard(Replica{Group: 3, ID: 2}); err != nil || len(got) != 0 {
		t.Fatalf("another replica heard %v (%v)", got, err)
	}
	if has, err := e.hasRaftState(r); err != nil || has {
		t.Fatalf("peers heard count as raft state: %v %v", has, err)
	}
	if err := e.DropReplica(r); err != nil {
		t.Fatal(err)
	}
	if got, err := e.Heard(r); err != nil || len(got) != 0 {
		t.Fatalf("a dropped replica still heard %v (%v)", got, err)
	}
}
