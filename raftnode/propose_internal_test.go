package raftnode

import (
	"bytes"
	"math"
	"testing"
)

// TestFrameProposal: a command framed in place is the entry
// encodeProposal makes of it, for ids of every varint length.
func TestFrameProposal(t *testing.T) {
	cmd := []byte("command")
	for _, id := range []uint64{1, 127, 128, 1 << 14, 1<<35 + 5, 1 << 63, math.MaxUint64} {
		buf := append(make([]byte, ProposalRoom), cmd...)
		if got, want := frameProposal(id, buf), encodeProposal(id, cmd); !bytes.Equal(got, want) {
			t.Errorf("id %d: framed %x, encoded %x", id, got, want)
		}
		gotID, gotCmd, err := decodeProposal(frameProposal(id, append(make([]byte, ProposalRoom), cmd...)))
		if err != nil || gotID != id || !bytes.Equal(gotCmd, cmd) {
			t.Errorf("id %d: decoded %d %q %v", id, gotID, gotCmd, err)
		}
	}
}
