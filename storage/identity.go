package storage

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/dataformat"
)

// Identity is who a replica is, persisted when it is first started and
// checked at every later start (etcd's member and cluster ids play the same
// role): the cluster it belongs to and the membership of its group.
type Identity struct {
	// ClusterID is the cluster's identity, fixed when the cluster is
	// created (see ClusterIDFor). Every peer RPC carries it.
	ClusterID uint64 `json:"cluster_id"`
	// Peers is the group's membership the replica was started with: Raft
	// id -> address (its --peers).
	Peers map[uint64]string `json:"peers"`
	// Format is the DataFormat the replica's data was written in.
	Format int `json:"format,omitempty"`
	// Members is the group's membership as the replica last applied it
	// (raft configuration changes add and remove members): Raft id ->
	// address. Empty until the first change.
	Members map[uint64]string `json:"members,omitempty"`
	// Joined: the replica was first started to join a running group
	// (ClusterJoin), so Peers names the members when it joined, itself
	// included, not the members the group was founded with.
	Joined bool `json:"joined,omitempty"`
	// FoundingVoters are the voters the group was founded with (the
	// configuration of its bootstrap snapshot), sorted: Peers' ids on a
	// replica that founded the group, learned from the leader's snapshot
	// (raftnode) on one that joined later. Empty in data written before
	// it was recorded, and on a joined replica until it learns them.
	FoundingVoters []uint64 `json:"founders,omitempty"`
	// Removed are the ids of the members the group removed, as far as the
	// replica has applied (or learned from its leader's snapshot), sorted:
	// an id is never a member twice (a new replica under a removed id
	// could vote twice in a term, not knowing the old one's vote).
	Removed []uint64 `json:"removed,omitempty"`
	// Token is the founding token of the replica's copy of its group
	// (FoundingToken), when one was given: by `admin join --create` to
	// the founders (FoundingTokenFor of the members it names every
	// founder with), or by its leader to a replica added later. 0 on a
	// founder started by flags (FoundingToken derives one) and in data
	// written before tokens were kept.
	Token uint64 `json:"founding_token,omitempty"`
}

// FoundingToken names the copy of group the replica belongs to, for the
// raft messages it sends and accepts (see FoundingTokenFor): Token when
// one was given, or, on a founder started by flags (or one whose data
// was written before tokens were kept), FoundingTokenFor of its founders'
// ids alone: founders started by flags may see each other at different
// addresses (proxies, NAT; see --cluster-id), so only the ids are sure to
// be alike. 0 when not known (a replica that joined before tokens were
// kept, or under a leader that knew none): such a replica sends messages
// every copy accepts, and accepts every copy's.
func (id Identity) FoundingToken(group uint64) uint64 {
	switch {
	case id.Token != 0:
		return id.Token
	case !id.Joined && len(id.Peers) > 0:
		ids := map[uint64]string{}
		for pid := range id.Peers {
			ids[pid] = ""
		}
		return FoundingTokenFor(id.ClusterID, group, ids)
	}
	return 0
}

// FoundingTokenFor names one copy of a group: a hash of the cluster, the
// group id and the members it was founded with (raft id -> address, or
// ids alone with empty addresses), the same on every founder given the
// same members, never 0.
//
// Raft messages are addressed by group and raft id alone, and two copies
// of one group id can run (a group that left keeps running; its id may be
// created again), so a replica of one copy could take another copy's
// terms, votes, entries or snapshots sent to an id they share, and lose
// what its own copy acknowledged: a node whose data was wiped and that
// hosts the new copy at the address the old copy still lists, say. Every
// raft message carries its sender's token and a replica drops those of
// another copy. `admin join --create` founds a copy with a token of its
// members' addresses, which differs from any other copy's unless both
// were founded with the same members at the same addresses (the nodes
// refuse to found such a second copy while any founder holds the first or
// has dropped it, so that takes every founder's data wiped). Copies
// founded by flags are told apart by their founders' ids alone: two such
// copies with the same ids share a token.
func FoundingTokenFor(clusterID, group uint64, founders map[uint64]string) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d\x00%d", clusterID, group)
	for _, id := range slices.Sorted(maps.Keys(founders)) {
		fmt.Fprintf(h, "\x00%d=%s", id, founders[id])
	}
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

// KnownFounders returns the voters the group was founded with when this
// replica knows them for certain: FoundingVoters, or, in data written
// before they were recorded, Peers' ids on a replica that founded the
// group (it was started with them). ok is false for a replica that joined
// later and has not learned them.
func (id Identity) KnownFounders() (founders []uint64, ok bool) {
	switch {
	case len(id.FoundingVoters) > 0:
		return slices.Clone(id.FoundingVoters), true
	case !id.Joined && len(id.Peers) > 0:
		return slices.Sorted(maps.Keys(id.Peers)), true
	}
	return nil, false
}

// Founders returns the ids of the members the group was founded with as
// far as this replica knows: KnownFounders when it knows them; otherwise
// (a replica that joined later, in data written before FoundingVoters
// was recorded, or before it learned them) Peers less the replica itself,
// a guess that takes the members added before it joined for founders:
// Peers cannot tell them apart.
func (id Identity) Founders(self uint64) []uint64 {
	if f, ok := id.KnownFounders(); ok {
		return f
	}
	var out []uint64
	for _, p := range slices.Sorted(maps.Keys(id.Peers)) {
		if !(id.Joined && p == self) {
			out = append(out, p)
		}
	}
	return out
}

// Current returns the membership in force: Members once a change was
// applied, Peers before.
func (id Identity) Current() map[uint64]string {
	if len(id.Members) > 0 {
		return id.Members
	}
	return id.Peers
}

// SetMembers records the group's membership after a configuration change
// (see Identity.Members), and the ids it has removed (Identity.Removed). The write is not synced: the raft log, which is,
// holds the change, and the member replays it on restart. A replica with
// no identity (started without one, as in tests) records nothing.
func (e *Engine) SetMembers(r Replica, members map[uint64]string, removed []uint64) error {
	return e.updateIdentity(r, func(id *Identity) {
		id.Members = maps.Clone(members)
		id.Removed = slices.Sorted(slices.Values(removed))
	}, false)
}

// SetFounders records the voters the group was founded with (see
// Identity.FoundingVoters), as a replica that joined later learns them.
// The write is synced: nothing else on disk holds them (they travel only
// in the snapshot a leader sends, whose image is not kept). A replica with
// no identity records nothing.
func (e *Engine) SetFounders(r Replica, founders []uint64) error {
	return e.updateIdentity(r, func(id *Identity) { id.FoundingVoters = slices.Sorted(slices.Values(founders)) }, true)
}

// updateIdentity rewrites r's stored identity with change applied, if one
// is stored.
func (e *Engine) updateIdentity(r Replica, change func(*Identity), sync bool) error {
	id, ok, err := e.LoadIdentity(r)
	if err != nil || !ok {
		return err
	}
	change(&id)
	v, err := json.Marshal(id)
	if err != nil {
		return err
	}
	return e.set(r.identityKey(), v, sync)
}

// DataFormat is the version of what replicas write: their log commands and
// state (see package internal/dataformat, which lists the formats). A
// replica refuses to start on data of another format rather than misread
// it (a log replayed under other rules could drop acknowledged writes).
const DataFormat = dataformat.Version

// ClusterIDFor derives a new cluster's id from a token and the initial
// membership of its controller group, as etcd derives its cluster id from
// --initial-cluster and --initial-cluster-token: replicas started with
// the same flags compute the same id without talking to each other, and a
// replica started with a different membership computes a different one.
func ClusterIDFor(token string, controllerPeers map[uint64]string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(token))
	for _, id := range slices.Sorted(maps.Keys(controllerPeers)) {
		fmt.Fprintf(h, "\x00%d=%s", id, controllerPeers[id])
	}
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

// ErrIdentityMismatch is matched by every *IdentityError.
var ErrIdentityMismatch = errors.New("storage: replica identity mismatch")

// IdentityError reports a start whose flags disagree with what the data
// directory says the replica is. Starting anyway could form a second
// majority beside the real group (a split brain) or join the wrong cluster.
type IdentityError struct {
	Dir      string
	Replica  Replica
	Stored   Identity // zero when nothing is stored
	Flags    Identity
	Problem  string
	Recovery string
}

// Error names the directory, the replica and the problem, gives the stored
// and the given identities, and ends with the way to recover.
func (e *IdentityError) Error() string {
	return fmt.Sprintf("storage %s: group %d replica %d: %s (stored: cluster %016x, peers %s; given: cluster %016x, peers %s). %s",
		e.Dir, e.Replica.Group, e.Replica.ID, e.Problem, e.Stored.ClusterID, formatPeers(e.Stored.Peers),
		e.Flags.ClusterID, formatPeers(e.Flags.Peers), e.Recovery)
}

// Is makes errors.Is(err, ErrIdentityMismatch) true.
func (e *IdentityError) Is(target error) bool { return target == ErrIdentityMismatch }

func formatPeers(p map[uint64]string) string {
	if len(p) == 0 {
		return "none"
	}
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, fmt.Sprintf("%d=%s", id, p[id]))
	}
	return strings.Join(parts, ",")
}

func (r Replica) identityKey() []byte { return append(r.prefix(kindRaft), raftIdentity) }

// LoadIdentity returns the identity stored for r; ok is false when none is.
func (e *Engine) LoadIdentity(r Replica) (id Identity, ok bool, err error) {
	v, ok, err := Get(e.db, r.identityKey())
	if err != nil || !ok {
		return Identity{}, false, err
	}
	if err := json.Unmarshal(v, &id); err != nil {
		return Identity{}, false, &CorruptionError{Dir: e.dir, Replica: r, Reason: fmt.Sprintf("identity record: %v", err)}
	}
	return id, true, nil
}

// ClusterState says what a replica with no stored identity may do, as
// etcd's --initial-cluster-state.
type ClusterState string

const (
	// ClusterNew: the replica is one of the founding members of a new
	// cluster or group.
	ClusterNew ClusterState = "new"
	// ClusterExisting: the replica is expected to hold the data of an
	// existing cluster; empty data is an error, never a fresh start.
	ClusterExisting ClusterState = "existing"
	// ClusterJoin: the replica was added to an existing group as a
	// learner (a membership change) and starts empty, learning everything
	// from the group's leader. Processes choose it for --initial-cluster-state
	// existing when the leader confirms the replica is such a learner.
	ClusterJoin ClusterState = "join"
)

// EnsureIdentity checks the identity a replica is started with against the
// one stored in its data, storing it on a first start. A missing
// ClusterID in want (0) means "whatever is stored" and is only allowed when
// something is. It returns the identity in force.
//
// It refuses (with *IdentityError) a different membership or cluster than
// the stored one, and empty data when state is ClusterExisting: such a
// replica would otherwise start a new, empty group beside the real one.
func (e *Engine) EnsureIdentity(r Replica, want Identity, state ClusterState) (Identity, error) {
	stored, ok, err := e.LoadIdentity(r)
	if err != nil {
		return Identity{}, err
	}
	mismatch := func(problem, recovery string) error {
		return &IdentityError{Dir: e.dir, Replica: r, Stored: stored, Flags: want, Problem: problem, Recovery: recovery}
	}
	if ok && stored.Format != DataFormat {
		return Identity{}, mismatch(fmt.Sprintf("the data was written by another version of shardkv (data format %d; this version reads format %d)", max(stored.Format, 1), DataFormat),
			"Run the version that wrote it, or move the data with a backup taken by that version and restored by this one.")
	}
	if ok {
		// The flags may name the membership the replica was created with,
		// or the one in force after configuration changes.
		if !maps.Equal(want.Peers, stored.Peers) && !(len(stored.Members) > 0 && maps.Equal(want.Peers, stored.Members)) {
			return Identity{}, mismatch("the flags name a different membership than the one this replica was created with or has now",
				"Start it with the flags it was created with (its original --peers; for `shardkv dev`, the same --replicas and --base-port) or with the group's current members (`shardkv admin member list`); membership is changed with `shardkv admin member`, not by restarting with other flags.")
		}
		if want.ClusterID != 0 && want.ClusterID != stored.ClusterID {
			return Identity{}, mismatch("the data belongs to another cluster",
				"Point the replica at its own cluster's peers and controllers, or give it an empty data directory.")
		}
		return stored, nil
	}
	hasRaft, err := e.hasRaftState(r)
	if err != nil {
		return Identity{}, err
	}
	switch {
	case hasRaft:
		return Identity{}, mismatch(fmt.Sprintf("the data holds a replica written before identities were recorded (data format 1; this version reads format %d)", DataFormat),
			"Run the version that wrote it, or move the data with a backup.")
	case hasRaft && state == ClusterJoin:
		return Identity{}, mismatch("the replica joins its group as a new member, but the data directory already holds it",
			"Start it on an empty data directory, or with the flags it was created with.")
	case !hasRaft && state == ClusterExisting:
		return Identity{}, mismatch("--initial-cluster-state existing, but the data directory holds no replica",
			"A lost replica's data cannot be recreated by starting it empty; restore it from a backup, or replace the replica: `shardkv admin member add` a new id (see the README's recovery section), then start it with --initial-cluster-state existing.")
	case want.ClusterID == 0:
		return Identity{}, mismatch("no cluster id known for a replica without stored identity", "Start the cluster's controllers first.")
	}
	// A first start.
	want.Format, want.Joined = DataFormat, state == ClusterJoin
	if !want.Joined {
		// A founding member: the group is bootstrapped with Peers.
		want.FoundingVoters = slices.Sorted(maps.Keys(want.Peers))
	}
	v, err := json.Marshal(want)
	if err != nil {
		return Identity{}, err
	}
	b := e.db.NewBatch()
	defer b.Close()
	if err := b.Set(r.identityKey(), v, nil); err != nil {
		return Identity{}, err
	}
	if err := b.Delete(r.unhostedKey(), nil); err != nil { // hosted again
		return Identity{}, err
	}
	if err := e.syncWrite(b); err != nil {
		return Identity{}, fmt.Errorf("storage %s: store identity: %w", e.dir, err)
	}
	return want, nil
}

// hasRaftState reports whether any Raft state (hard state, snapshot or
// entries) is stored for r.
func (e *Engine) hasRaftState(r Replica) (bool, error) {
	lo := r.prefix(kindRaft)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: kvpb.PrefixEnd(lo)})
	if err != nil {
		return false, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) == len(lo) || k[len(lo)] != raftIdentity && k[len(lo)] != raftHeard {
			return true, nil
		}
	}
	return false, it.Error()
}

// RecordHeard records that replica r heard from peers, members of its
// group (a raft message arrived from each). Peers ask it of a founder that
// starts on empty data (raftnode's MemberProgress): one that was heard
// from ran before and lost its data, and must not start over (it could
// vote twice in a term or lose what it acknowledged), whatever the
// group's current leader knows of it (a leader elected since knows
// nothing). Synced: a leader that heard a follower may write nothing
// synced for a while after (a commit index alone is not synced), and a
// power loss then must not forget the follower. raftnode writes each peer
// once for the stored replica (it loads them at start: Heard).
func (e *Engine) RecordHeard(r Replica, peers ...uint64) error {
	b := e.db.NewBatch()
	defer b.Close()
	for _, peer := range peers {
		if err := b.Set(binary.BigEndian.AppendUint64(r.heardPrefix(), peer), nil, nil); err != nil {
			return err
		}
	}
	if err := e.syncWrite(b); err != nil {
		return fmt.Errorf("record %s heard peers %v: %w", r, peers, err)
	}
	return nil
}

// Heard returns the peers RecordHeard recorded for r.
func (e *Engine) Heard(r Replica) ([]uint64, error) {
	lo := r.heardPrefix()
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: kvpb.PrefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []uint64
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) == len(lo)+8 {
			out = append(out, binary.BigEndian.Uint64(k[len(lo):]))
		}
	}
	return out, it.Error()
}

// Replicas lists every replica whose identity is stored in the engine, in
// (group, id) order: the replicas a process (a node) hosts, which it
// starts again at every start whether or not its flags name them.
func (e *Engine) Replicas() ([]Replica, error) {
	lo := []byte{kindRaft}
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: kvpb.PrefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []Replica
	// One seek per replica: to its identity key, then past its keys.
	for it.First(); it.Valid(); {
		k := it.Key()
		if len(k) < 1+16 {
			it.Next()
			continue
		}
		r := Replica{Group: binary.BigEndian.Uint64(k[1:9]), ID: binary.BigEndian.Uint64(k[9:17])}
		if it.SeekGE(r.identityKey()) && string(it.Key()) == string(r.identityKey()) {
			out = append(out, r)
		}
		it.SeekGE(kvpb.PrefixEnd(r.prefix(kindRaft)))
	}
	return out, it.Error()
}

// DropReplica deletes everything stored for replica r (its identity, raft
// log, hard state, snapshot and state machine) in one synced batch: the
// engine no longer lists it (Replicas), and a crash leaves all of it or
// none. The same batch records that r was dropped (Unhosted), until an
// identity is stored for it again. The replica must not be running.
func (e *Engine) DropReplica(r Replica) error {
	b := e.db.NewBatch()
	defer b.Close()
	for _, kind := range []byte{kindRaft, kindState} {
		lo := r.prefix(kind)
		if err := b.DeleteRange(lo, kvpb.PrefixEnd(lo), nil); err != nil {
			return err
		}
	}
	if err := b.Set(r.unhostedKey(), nil, nil); err != nil {
		return err
	}
	if err := e.syncWrite(b); err != nil {
		return fmt.Errorf("drop %s: %w", r, err)
	}
	return nil
}

// Unhosted reports whether replica r was dropped (DropReplica) and not
// hosted again since: a process started with flags that still name it
// must not found it again as a new, empty member.
func (e *Engine) Unhosted(r Replica) (bool, error) {
	_, ok, err := Get(e.db, r.unhostedKey())
	return ok, err
}
