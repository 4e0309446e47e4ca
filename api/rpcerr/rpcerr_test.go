package rpcerr_test

import (
	"errors"
	"testing"

	"github.com/shardkv/shardkv/api/rpcerr"
)

var table = rpcerr.NewTable("test", rpcerr.Raft)

// TestNotLeaderCarriesTheLeader: a NOT_LEADER refusal keeps the leader's
// id and address across the wire, and stays "certainly not applied".
func TestNotLeaderCarriesTheLeader(t *testing.T) {
	for _, sent := range []*rpcerr.NotLeaderError{{}, {Leader: 3}, {Leader: 2, Addr: "10.0.0.2:7111"}} {
		got := table.FromStatus(table.ToStatus(sent))
		var nl *rpcerr.NotLeaderError
		if !errors.As(got, &nl) {
			t.Fatalf("%v: decoded %T %v, want a *NotLeaderError", sent, got, got)
		}
		if nl.Leader != sent.Leader || nl.Addr != sent.Addr {
			t.Errorf("sent leader %d at %q, decoded %d at %q", sent.Leader, sent.Addr, nl.Leader, nl.Addr)
		}
		if !errors.Is(got, rpcerr.ErrNotLeader) || !rpcerr.CertainlyNotApplied(got) {
			t.Errorf("%v: lost its class", got)
		}
		if got.Error() != sent.Error() {
			t.Errorf("message %q, want %q", got.Error(), sent.Error())
		}
	}
}

// TestSentinelsRoundTrip: every raft sentinel, wrapped, comes back as
// itself.
func TestSentinelsRoundTrip(t *testing.T) {
	for _, e := range rpcerr.Raft.Entries() {
		sent := errors.Join(errors.New("context"), e.Err)
		if got := table.FromStatus(table.ToStatus(sent)); !errors.Is(got, e.Err) {
			t.Errorf("%s: decoded %v", e.Reason, got)
		}
	}
}
