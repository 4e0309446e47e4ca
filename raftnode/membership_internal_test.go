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
