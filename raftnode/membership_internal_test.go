package raftnode

import (
	"bytes"
	"encoding/binary"
	"maps"
	"slices"
	"testing"
)

// TestSnapshotEnvelopeFounders: the founders travel in a snapshot's
// envelope when the sender knows them, and an envelope without them (a
// sender that does not know them, or of a version before them) still
// unwraps, naming none.
func TestSnapshotEnvelopeFounders(t *testing.T) {
	image := []byte("image")
	addrs := map[uint64]string{4: "127.0.0.1:9004"}
	for _, known := range []bool{true, false} {
		n := &Node{addrs: addrs, founders: []uint64{1, 2, 3}, foundersKnown: known, removed: []uint64{2}}
		data, err := n.wrapSnapshot(image)
		if err != nil {
			t.Fatal(err)
		}
		env, got, err := unwrapSnapshot(data)
		want := []uint64(nil)
		if known {
			want = n.founders
		}
		if err != nil || !bytes.Equal(got, image) || !maps.Equal(env.Addrs, addrs) || !slices.Equal(env.Founders, want) || !slices.Equal(env.Removed, n.removed) {
			t.Fatalf("known %v: %+v %q %v; want founders %v", known, env, got, err, want)
		}
	}
	// An envelope of the version before founders.
	head := []byte(`{"addrs":{"4":"127.0.0.1:9004"}}`)
	data := binary.AppendUvarint([]byte(snapshotMagic), uint64(len(head)))
	data = append(append(data, head...), image...)
	env, got, err := unwrapSnapshot(data)
	if err != nil || !bytes.Equal(got, image) || !maps.Equal(env.Addrs, addrs) || env.Founders != nil {
		t.Fatalf("an envelope without founders: %+v %q %v", env, got, err)
	}
}

// TestWasRemoved: an id counts as removed only while it is in no
// configuration of the group: not in a joint configuration (an outgoing
// voter still votes), and not a voter again (--force-new-cluster).
func TestWasRemoved(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Membership
		want bool
	}{
		{"removed", Membership{Voters: []uint64{1, 2, 4}, Removed: []uint64{3}}, true},
		{"never removed", Membership{Voters: []uint64{1, 2, 3}}, false},
		{"an outgoing voter of a joint configuration", Membership{Voters: []uint64{1, 2, 4}, Joint: true, Removed: []uint64{3}}, false},
		{"forced back as the only voter", Membership{Voters: []uint64{3}, Removed: []uint64{3}}, false},
		{"a learner again", Membership{Voters: []uint64{1}, Learners: []uint64{3}, Removed: []uint64{3}}, false},
	} {
		if got := tc.m.WasRemoved(3); got != tc.want {
			t.Errorf("%s: WasRemoved(3) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
