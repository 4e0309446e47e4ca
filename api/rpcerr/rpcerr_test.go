package rpcerr_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
)

var table = rpcerr.NewTable("test", rpcerr.Raft, rpcerr.Commands)

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

// TestSentinelsRoundTrip: every shared sentinel (raft's, storage's,
// sessions'), wrapped, comes back as itself.
func TestSentinelsRoundTrip(t *testing.T) {
	for _, e := range append(rpcerr.Raft.Entries(), rpcerr.Commands.Entries()...) {
		sent := errors.Join(errors.New("context"), e.Err)
		if got := table.FromStatus(table.ToStatus(sent)); !errors.Is(got, e.Err) {
			t.Errorf("%s: decoded %v", e.Reason, got)
		}
	}
}

// TestSessionErrorsKeepTheirWireForm: the session sentinels, declared once
// for the KV service and the controller, travel as each service sent them
// when it declared its own: the same code and reason, under the service's
// domain, so clients built before decode them as before.
func TestSessionErrorsKeepTheirWireForm(t *testing.T) {
	for _, svc := range []struct {
		table  *rpcerr.Table
		domain string
	}{{kvpb.Errors, "shardkv.kv"}, {controllerpb.Errors, "shardkv.controller"}} {
		for _, c := range []struct {
			err    error
			code   codes.Code
			reason string
		}{
			{rpcerr.ErrStaleRequest, codes.FailedPrecondition, "STALE_REQUEST"},
			{rpcerr.ErrSessionExpired, codes.FailedPrecondition, "SESSION_EXPIRED"},
			{rpcerr.ErrMalformed, codes.InvalidArgument, "MALFORMED"},
		} {
			sent := svc.table.ToStatus(fmt.Errorf("%w: client 7 sequence 3", c.err))
			st := status.Convert(sent)
			var info *errdetails.ErrorInfo
			for _, d := range st.Details() {
				if i, ok := d.(*errdetails.ErrorInfo); ok {
					info = i
				}
			}
			if st.Code() != c.code || info.GetReason() != c.reason || info.GetDomain() != svc.domain {
				t.Errorf("%s %v: sent %v %s/%s, want %v %s/%s", svc.domain, c.err,
					st.Code(), info.GetDomain(), info.GetReason(), c.code, svc.domain, c.reason)
			}
			if got := svc.table.FromStatus(sent); !errors.Is(got, c.err) {
				t.Errorf("%s %v: decoded %v", svc.domain, c.err, got)
			}
		}
	}
}
