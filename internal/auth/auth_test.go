package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/shardkv/shardkv/api/controllerpb"
	_ "github.com/shardkv/shardkv/api/kvpb"
	_ "github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	_ "github.com/shardkv/shardkv/api/transportpb"
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
		},
		Roles: []*controllerpb.AuthRole{
			{Name: "a-rw", Permissions: []*controllerpb.Permission{{Prefix: []byte("a/"), Access: controllerpb.Access_ACCESS_READWRITE}}},
			{Name: "all-r", Permissions: []*controllerpb.Permission{{Prefix: nil, Access: controllerpb.Access_ACCESS_READ}}},
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
	} {
		if _, err := v.Authenticate(bad, nil, now); !errors.Is(err, rpcerr.ErrAuthFailed) {
			t.Errorf("%s token: %v", name, err)
		}
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
