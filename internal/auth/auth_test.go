package auth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"pgregory.net/rapid"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	_ "github.com/shardkv/shardkv/api/kvpb"
	_ "github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	_ "github.com/shardkv/shardkv/api/transportpb"
	_ "github.com/shardkv/shardkv/internal/grouppb"
)

func testView(t *testing.T) (*View, ed25519.PrivateKey) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return NewView(&controllerpb.AuthStateReply{Enabled: true, Revision: 9, PublicKey: pub,
		Users: []*controllerpb.AuthUser{
			{Name: "root", Roles: []string{AdminRole}, Epoch: 1},
			{Name: "alice", Roles: []string{"a-rw"}, Epoch: 2},
			{Name: "reader", Roles: []string{"all-r"}, Epoch: 3, CertCn: "reader-cert"},
			{Name: "bob", Roles: []string{"b0-r", "b1-rw"}, Epoch: 4},
		},
		Roles: []*controllerpb.AuthRole{
			{Name: "a-rw", Permissions: []*controllerpb.Permission{{Prefix: []byte("a/"), Access: controllerpb.Access_ACCESS_READWRITE}}},
			{Name: "all-r", Permissions: []*controllerpb.Permission{{Prefix: nil, Access: controllerpb.Access_ACCESS_READ}}},
			{Name: "b0-r", Permissions: []*controllerpb.Permission{{Prefix: []byte("b0"), Access: controllerpb.Access_ACCESS_READ}}},
			{Name: "b1-rw", Permissions: []*controllerpb.Permission{{Prefix: []byte("b1"), Access: controllerpb.Access_ACCESS_READWRITE},
				{Prefix: []byte("b3"), Access: controllerpb.Access_ACCESS_READWRITE}}},
		}}), key
}

func TestTokens(t *testing.T) {
	v, key := testView(t)
	now := time.Now()
	tok := Sign(key, Claims{User: "alice", Epoch: 2, Revision: 9, Expires: now.Add(TokenTTL).UnixMilli()})
	if u, err := v.Authenticate(tok, nil, now); err != nil || u != "alice" {
		t.Fatalf("valid token: %q %v", u, err)
	}
	// Verified once, the token still expires.
	if _, err := v.Authenticate(tok, nil, now.Add(TokenTTL)); !errors.Is(err, rpcerr.ErrAuthFailed) {
		t.Fatalf("a verified token past its expiry: %v", err)
	}
	for name, bad := range map[string]string{
		"expired":      Sign(key, Claims{User: "alice", Epoch: 2, Expires: now.Add(-time.Second).UnixMilli()}),
		"old epoch":    Sign(key, Claims{User: "alice", Epoch: 1, Expires: now.Add(TokenTTL).UnixMilli()}),
		"deleted user": Sign(key, Claims{User: "bob", Epoch: 2, Expires: now.Add(TokenTTL).UnixMilli()}),
		"tampered":     strings.Replace(tok, ".", ".x", 1),
		"garbage":      "v1.....",
		"other key":    Sign(ed25519.NewKeyFromSeed(make([]byte, 32)), Claims{User: "alice", Epoch: 2, Expires: now.Add(TokenTTL).UnixMilli()}),
		// Signed with the cluster's key, but no controller issues it.
		"long-lived": Sign(key, Claims{User: "alice", Epoch: 2, Expires: now.Add(TokenTTL + MaxClockSkew + time.Second).UnixMilli()}),
		"forever":    Sign(key, Claims{User: "alice", Epoch: 2, Expires: now.AddDate(100, 0, 0).UnixMilli()}),
	} {
		if _, err := v.Authenticate(bad, nil, now); !errors.Is(err, rpcerr.ErrAuthFailed) {
			t.Errorf("%s token: %v", name, err)
		}
	}
	// A controller whose clock is ahead by less than MaxClockSkew issues
	// tokens that are valid.
	skewed := Sign(key, Claims{User: "alice", Epoch: 2, Expires: now.Add(TokenTTL + MaxClockSkew - time.Second).UnixMilli()})
	if _, err := v.Authenticate(skewed, nil, now); err != nil {
		t.Errorf("a token of a controller ahead by less than MaxClockSkew: %v", err)
	}
	if _, err := v.Authenticate("", nil, now); !errors.Is(err, rpcerr.ErrAuthFailed) {
		t.Errorf("no credentials: %v", err)
	}
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "reader-cert"}}
	if u, err := v.Authenticate("", cert, now); err != nil || u != "reader" {
		t.Errorf("certificate: %q %v", u, err)
	}
	cert.Subject.CommonName = "stranger"
	if _, err := v.Authenticate("", cert, now); !errors.Is(err, rpcerr.ErrAuthFailed) {
		t.Errorf("certificate of no user: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	v, _ := testView(t)
	read, write := controllerpb.Access_ACCESS_READ, controllerpb.Access_ACCESS_WRITE
	key := func(k string) need { return keyNeed([]byte(k), 0) }
	cases := []struct {
		user       string
		start, end string
		access     controllerpb.Access
		want       bool
	}{
		{"alice", key("a/1").s(), key("a/1").e(), read, true},
		{"alice", key("a/1").s(), key("a/1").e(), write, true},
		{"alice", key("b/1").s(), key("b/1").e(), read, false}, // a user with a/ cannot read b/
		{"alice", "a/", "a0", read, true},                      // the whole prefix
		{"alice", "a/", "b", read, false},                      // beyond it
		{"alice", "a/", "", read, false},                       // no end
		{"alice", "", "", read, false},
		{"reader", key("b/1").s(), key("b/1").e(), read, true},
		{"reader", key("b/1").s(), key("b/1").e(), write, false}, // a read-only user cannot write
		{"reader", "", "", read, true},
		{"root", "", "", write, true},
		{"nobody", key("a/1").s(), key("a/1").e(), read, false},
		// Permissions of several roles cover a range together...
		{"bob", "b0", "b2", read, true},
		{"bob", "b05", "b15", read, true},
		// ...but not across a gap, nor with the wrong access.
		{"bob", "b0", "b4", read, false},
		{"bob", "b0", "b2", write, false},
		{"bob", "b1", "b2", write, true},
		{"bob", "b1", "", read, false},
	}
	for _, c := range cases {
		if got := v.CanRange(c.user, []byte(c.start), []byte(c.end), c.access); got != c.want {
			t.Errorf("%s %s [%q, %q): %v, want %v", c.user, FormatAccess(c.access), c.start, c.end, got, c.want)
		}
	}
	if !v.IsAdmin("root") || v.IsAdmin("alice") {
		t.Error("admin role")
	}
}

// TestWriteThatReadsNeedsRead: a write that learns the key's value (its
// value returned, or a condition on its value or version) needs READ as
// well as WRITE; a plain write needs WRITE only.
func TestWriteThatReadsNeedsRead(t *testing.T) {
	v := NewView(&controllerpb.AuthStateReply{Enabled: true, Revision: 1,
		Users: []*controllerpb.AuthUser{{Name: "writer", Roles: []string{"w"}}, {Name: "rw", Roles: []string{"rw"}}},
		Roles: []*controllerpb.AuthRole{
			{Name: "w", Permissions: []*controllerpb.Permission{{Prefix: []byte("k"), Access: controllerpb.Access_ACCESS_WRITE}}},
			{Name: "rw", Permissions: []*controllerpb.Permission{{Prefix: []byte("k"), Access: controllerpb.Access_ACCESS_READWRITE}}},
		}})
	version := uint64(3)
	rule := rules["/shardkv.kv.v1.KV/Write"]
	for _, c := range []struct {
		what  string
		req   *kvpb.WriteRequest
		reads bool
	}{
		{"put", &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte("k1"), Value: []byte("v")}, false},
		{"delete", &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_DELETE, Key: []byte("k1")}, false},
		{"put returning the old value", &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte("k1"), ReturnValue: true}, true},
		{"append returning the value", &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_APPEND, Key: []byte("k1"), ReturnValue: true}, true},
		{"put if value", &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte("k1"), IfValue: []byte("guess")}, true},
		{"put if the value is empty", &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_PUT, Key: []byte("k1"), IfValue: []byte{}}, true},
		{"delete if version", &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_DELETE, Key: []byte("k1"), IfVersion: &version}, true},
	} {
		// Through the wire, as the guard sees it.
		b, err := proto.Marshal(c.req)
		if err != nil {
			t.Fatal(err)
		}
		req := &kvpb.WriteRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			t.Fatal(err)
		}
		n := rule(req)
		if got := n.allowed(v, "writer"); got == c.reads {
			t.Errorf("%s by a write-only user: allowed %v, want %v", c.what, got, !c.reads)
		}
		if !n.allowed(v, "rw") {
			t.Errorf("%s by a read-write user: refused", c.what)
		}
	}
}

// TestPeersMayNotChangeAuthOrBackUp: a peer of the cluster is allowed what
// processes of the cluster call, but not an auth change nor a backup's
// read of every shard, which need a user with the admin role.
func TestPeersMayNotChangeAuthOrBackUp(t *testing.T) {
	v, _ := testView(t)
	g := NewGuard(GuardConfig{View: func() *View { return v }, IsPeer: func(context.Context) bool { return true },
		Logger: slog.New(slog.DiscardHandler)})
	for _, method := range []string{"/shardkv.controller.v1.Controller/Join", "/shardkv.member.v1.Membership/Change",
		"/shardkv.transport.v1.Raft/Stream", "/shardkv.internal.group.v1.Handoff/PullShard", "/shardkv.controller.v1.Controller/AuthState"} {
		if _, err := g.check(context.Background(), method, nil); err != nil {
			t.Errorf("a peer calls %s: %v", method, err)
		}
	}
	for method := range userOnly {
		if _, err := g.check(context.Background(), method, nil); !errors.Is(rpcerr.Auth.FromStatus(err), rpcerr.ErrAuthFailed) {
			t.Errorf("a peer without a user's credentials calls %s: %v, want ErrAuthFailed", method, err)
		}
	}
}

func (n need) s() string { return string(n.start) }
func (n need) e() string { return string(n.end) }

func TestRedactDropsPasswords(t *testing.T) {
	for _, req := range []*controllerpb.AuthChangeRequest{
		{Op: &controllerpb.AuthChangeRequest_UserAdd{UserAdd: &controllerpb.UserAdd{Name: "u", Password: "hunter2-secret"}}},
		{Op: &controllerpb.AuthChangeRequest_UserPasswd{UserPasswd: &controllerpb.UserPassword{Name: "u", Password: "hunter2-secret"}}},
	} {
		if got := Redact(req); strings.Contains(got, "hunter2") || !strings.Contains(got, "u") {
			t.Errorf("Redact: %s", got)
		}
		if req.String() == "" || !strings.Contains(req.String(), "hunter2") {
			t.Fatal("Redact changed its argument")
		}
	}
}

func TestRedactDropsAuthenticatePassword(t *testing.T) {
	req := &controllerpb.AuthenticateRequest{Name: "u", Password: "hunter2-secret"}
	if got := Redact(req); strings.Contains(got, "hunter2") || !strings.Contains(got, "u") {
		t.Errorf("Redact: %s", got)
	}
	if !strings.Contains(req.String(), "hunter2") {
		t.Fatal("Redact changed its argument")
	}
}

// FuzzParsePermission: operator input either parses to a valid
// permission that formats back to a name ParseAccess reads again, or is
// refused as rpcerr.ErrInvalidAuth; never a panic.
func FuzzParsePermission(f *testing.F) {
	for _, s := range [][2]string{{"read", "a/"}, {"WRITE", ""}, {"rw", "\xff"}, {"readwrite", "x"}, {"", ""}, {"reed", "a"}, {"r", strings.Repeat("k", MaxPrefix+1)}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, access, prefix string) {
		p, err := ParsePermission(access, prefix)
		if err != nil {
			if !errors.Is(err, rpcerr.ErrInvalidAuth) {
				t.Fatalf("error %v is not ErrInvalidAuth", err)
			}
			return
		}
		if p.GetAccess() < controllerpb.Access_ACCESS_READ || p.GetAccess() > controllerpb.Access_ACCESS_READWRITE || string(p.GetPrefix()) != prefix {
			t.Fatalf("parsed %q %q to %v", access, prefix, p)
		}
		if again, err := ParseAccess(FormatAccess(p.GetAccess())); err != nil || again != p.GetAccess() {
			t.Fatalf("format/parse round trip of %v: %v %v", p.GetAccess(), again, err)
		}
	})
}

// TestRulesNameRealMethods: every method the rules and the audit name is
// a method of a registered service (a typo would fall to the default,
// admin only, or go unaudited).
func TestRulesNameRealMethods(t *testing.T) {
	names := slices.Collect(maps.Keys(rules))
	names = append(names, slices.Collect(maps.Keys(audited))...)
	names = append(names, slices.Collect(maps.Keys(userOnly))...)
	for _, full := range names {
		svc, method, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
		if !ok {
			t.Errorf("%q is not /service/method", full)
			continue
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			t.Errorf("%s: no service %s", full, svc)
			continue
		}
		if d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(method)) == nil {
			t.Errorf("%s: service %s has no method %s", full, svc, method)
		}
	}
}

// TestCanRangeMatchesKeys: CanRange agrees with checking the keys of the
// range one by one: the short keys, the range's start and the prefixes'
// ends, among which is the first key of every gap between permissions.
func TestCanRangeMatchesKeys(t *testing.T) {
	alphabet := []byte{0x00, 'a', 'b', 0xff}
	var keys [][]byte
	var gen func(prefix []byte)
	gen = func(prefix []byte) {
		keys = append(keys, prefix)
		if len(prefix) < 3 {
			for _, c := range alphabet {
				gen(append(slices.Clip(prefix), c))
			}
		}
	}
	gen(nil)
	shortKey := func(max int) *rapid.Generator[[]byte] {
		return rapid.SliceOfN(rapid.SampledFrom(alphabet), 0, max)
	}
	rapid.Check(t, func(t *rapid.T) {
		var perms []*controllerpb.Permission
		for range rapid.IntRange(0, 4).Draw(t, "perms") {
			perms = append(perms, &controllerpb.Permission{Prefix: shortKey(2).Draw(t, "prefix"),
				Access: controllerpb.Access(rapid.IntRange(1, 3).Draw(t, "access"))})
		}
		v := NewView(&controllerpb.AuthStateReply{Enabled: true,
			Users: []*controllerpb.AuthUser{{Name: "u", Roles: []string{"r"}}},
			Roles: []*controllerpb.AuthRole{{Name: "r", Permissions: perms}}})
		start, end := shortKey(3).Draw(t, "start"), shortKey(3).Draw(t, "end")
		need := controllerpb.Access(rapid.IntRange(1, 2).Draw(t, "need"))
		if len(end) > 0 && bytes.Compare(end, start) <= 0 {
			return // an empty range: nothing to compare key by key
		}
		// A gap begins at the start or at a prefix's end: those keys too.
		candidates := append(slices.Clip(keys), start)
		for _, p := range perms {
			if pe := kvpb.PrefixEnd(p.GetPrefix()); pe != nil {
				candidates = append(candidates, pe)
			}
		}
		want := true
		for _, k := range candidates {
			if bytes.Compare(k, start) < 0 || len(end) > 0 && bytes.Compare(k, end) >= 0 {
				continue
			}
			if !slices.ContainsFunc(perms, func(p *controllerpb.Permission) bool {
				return p.GetAccess()&need == need && bytes.HasPrefix(k, p.GetPrefix())
			}) {
				want = false
			}
		}
		if len(end) == 0 && want {
			// No end: some permission must reach past every key (prefix "").
			want = slices.ContainsFunc(perms, func(p *controllerpb.Permission) bool {
				return p.GetAccess()&need == need && kvpb.PrefixEnd(p.GetPrefix()) == nil
			})
		}
		if got := v.CanRange("u", start, end, need); got != want {
			t.Fatalf("CanRange [%q, %q) %v with %v = %v, want %v", start, end, need, perms, got, want)
		}
	})
}

// TestUnconfirmedViewRefuses: a group process enforces only a view the
// controller confirmed within Lease: one loaded from disk (set without a
// poll) or last confirmed longer ago refuses every call but a peer's as
// Unavailable; each successful poll of Follow, changed or not, confirms.
func TestUnconfirmedViewRefuses(t *testing.T) {
	v, _ := testView(t)
	state := &controllerpb.AuthStateReply{Enabled: true, Revision: v.Revision, PublicKey: v.pub,
		Users: []*controllerpb.AuthUser{{Name: "reader", Roles: []string{AdminRole}, CertCn: "reader-cert"}}}
	h := &Holder{}
	h.RequireConfirmation(Lease)
	h.Set(state) // as a restart loads it from disk
	now := time.Now()
	peer := false
	g := NewGuard(GuardConfig{View: h.View, Unconfirmed: h.Unconfirmed, Now: func() time.Time { return now },
		IsPeer: func(context.Context) bool { return peer }, Logger: slog.New(slog.DiscardHandler)})
	const method = "/shardkv.controller.v1.Controller/Query"
	code := func() codes.Code {
		_, err := g.check(context.Background(), method, nil)
		return status.Code(err)
	}
	if c := code(); c != codes.Unavailable {
		t.Fatalf("a view loaded from disk, never confirmed: %v, want Unavailable", c)
	}
	// Follow confirms on every successful poll, the first one and the
	// long polls that bring nothing new.
	ctx, cancel := context.WithCancel(context.Background())
	polls := make(chan bool)
	go Follow(ctx, h, func(ctx context.Context, after uint64, wait bool) (*controllerpb.AuthStateReply, error) {
		select {
		case polls <- true:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return state, nil
	}, nil, slog.New(slog.DiscardHandler))
	<-polls
	<-polls // the first poll's answer is held
	cancel()
	if h.Unconfirmed(time.Now()) {
		t.Fatal("unconfirmed after a successful poll")
	}
	h.Confirm(now)
	if c := code(); c != codes.Unauthenticated {
		t.Errorf("a confirmed view, no credentials: %v, want Unauthenticated (checked, not refused as stale)", c)
	}
	now = now.Add(Lease + time.Second)
	if c := code(); c != codes.Unavailable {
		t.Errorf("a view confirmed longer than Lease ago: %v, want Unavailable", c)
	}
	peer = true
	if c := code(); c != codes.OK {
		t.Errorf("a peer, the view unconfirmed: %v, want OK", c)
	}
	// A holder without a lease (a controller's) never goes stale.
	if (&Holder{}).Unconfirmed(now) {
		t.Error("a holder that requires no confirmation is unconfirmed")
	}
}

// TestTokenOfALaterRevision: a token issued at an auth revision above the
// server's view is not judged by it (the server has not learned its user,
// role or key yet): errBehind, which the guard answers Unavailable.
func TestTokenOfALaterRevision(t *testing.T) {
	v, key := testView(t)
	now := time.Now()
	for name, tok := range map[string]string{
		"a new user":          Sign(key, Claims{User: "carol", Epoch: 10, Revision: v.Revision + 1, Expires: now.Add(TokenTTL).UnixMilli()}),
		"a known user":        Sign(key, Claims{User: "alice", Epoch: 2, Revision: v.Revision + 1, Expires: now.Add(TokenTTL).UnixMilli()}),
		"a key not known yet": Sign(ed25519.NewKeyFromSeed(make([]byte, 32)), Claims{User: "alice", Epoch: 12, Revision: v.Revision + 3, Expires: now.Add(TokenTTL).UnixMilli()}),
	} {
		if _, err := v.Authenticate(tok, nil, now); !errors.Is(err, errBehind) {
			t.Errorf("%s at a later revision: %v, want errBehind", name, err)
		}
	}
	// At the view's revision or before: judged as usual.
	if _, err := v.Authenticate(Sign(key, Claims{User: "carol", Epoch: 10, Revision: v.Revision, Expires: now.Add(TokenTTL).UnixMilli()}), nil, now); !errors.Is(err, rpcerr.ErrAuthFailed) {
		t.Errorf("an unknown user at the view's revision: %v, want ErrAuthFailed", err)
	}
}

// TestAuditCoversOutcomesThatMayHaveCommitted: only a NOT_LEADER refusal
// (proposed nothing; the leader audits the call) goes unaudited: a leader
// change (Unavailable, outcome unknown) is logged, and so is a failed
// Authenticate, with the user it claimed and never the password.
func TestAuditCoversOutcomesThatMayHaveCommitted(t *testing.T) {
	var out bytes.Buffer
	g := NewGuard(GuardConfig{View: func() *View { return nil }, Logger: slog.New(slog.NewTextHandler(&out, nil))})
	const join = "/shardkv.controller.v1.Controller/Join"
	g.audit(join, "root", &controllerpb.JoinRequest{}, controllerpb.Errors.ToStatus(&rpcerr.NotLeaderError{Leader: 2, Addr: "x:1"}))
	if out.Len() != 0 {
		t.Errorf("a NOT_LEADER refusal was audited: %s", out.String())
	}
	g.audit(join, "root", &controllerpb.JoinRequest{}, controllerpb.Errors.ToStatus(rpcerr.ErrLeaderChanged))
	if !strings.Contains(out.String(), "Controller/Join") || !strings.Contains(out.String(), "user=root") {
		t.Errorf("a join whose leader changed (it may have committed) was not audited: %q", out.String())
	}
	out.Reset()
	req := &controllerpb.AuthenticateRequest{Name: "mallory", Password: "hunter2-secret"}
	g.audit(authenticateMethod, whoPublic, req, rpcerr.Auth.ToStatus(rpcerr.ErrAuthFailed))
	if got := out.String(); !strings.Contains(got, "Authenticate") || !strings.Contains(got, "mallory") || strings.Contains(got, "hunter2") {
		t.Errorf("a failed Authenticate: audit %q, want the user and no password", got)
	}
	out.Reset()
	g.audit(authenticateMethod, whoPublic, req, nil)
	if out.Len() != 0 {
		t.Errorf("a successful Authenticate was audited: %s", out.String())
	}
}

// TestStatusDigestsNeedAdmin: any user may ask a group's status, but its
// digests (which read the replica's whole state) need the admin role.
func TestStatusDigestsNeedAdmin(t *testing.T) {
	v, _ := testView(t)
	rule := rules["/shardkv.kv.v1.KV/Status"]
	if !rule(&kvpb.StatusRequest{}).allowed(v, "alice") {
		t.Error("alice may not ask a status")
	}
	if rule(&kvpb.StatusRequest{Digests: true}).allowed(v, "alice") {
		t.Error("alice may ask for digests")
	}
	if !rule(&kvpb.StatusRequest{Digests: true}).allowed(v, "root") {
		t.Error("root may not ask for digests")
	}
}
