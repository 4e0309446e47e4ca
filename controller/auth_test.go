package controller

import (
	"bytes"

	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// authCmd is one auth change in session (client, seq), as the leader logs
// it: hash stands for the bcrypt hash it made of the password.
func authCmd(client, seq uint64, ch *controllerpb.AuthChangeRequest, hash string, key []byte) *controllerlogpb.Command {
	ch.Session = &controllerpb.Session{ClientId: client, Seq: seq}
	return &controllerlogpb.Command{Op: &controllerlogpb.Command_Auth{Auth: &controllerlogpb.AuthCommand{
		Change: ch, PasswordHash: []byte(hash), SigningKey: key}}}
}

func userAdd(name string) *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserAdd{UserAdd: &controllerpb.UserAdd{Name: name}}}
}

func userAddCN(name, cn string) *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserAdd{UserAdd: &controllerpb.UserAdd{Name: name, CertCn: cn}}}
}

func grantRole(user, role string) *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserGrantRole{UserGrantRole: &controllerpb.UserRole{User: user, Role: role}}}
}

func revokeRole(user, role string) *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserRevokeRole{UserRevokeRole: &controllerpb.UserRole{User: user, Role: role}}}
}

func roleAdd(name string) *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_RoleAdd{RoleAdd: &controllerpb.RoleName{Name: name}}}
}

func roleGrant(role, prefix string, a controllerpb.Access) *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_RoleGrant{RoleGrant: &controllerpb.RolePermission{
		Role: role, Permission: &controllerpb.Permission{Prefix: []byte(prefix), Access: a}}}}
}

func enable() *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_Enable{Enable: &controllerpb.AuthEnable{}}}
}

func userDelete(name string) *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserDelete{UserDelete: &controllerpb.UserName{Name: name}}}
}

func passwd(name string) *controllerpb.AuthChangeRequest {
	return &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserPasswd{UserPasswd: &controllerpb.UserPassword{Name: name}}}
}

func TestAuthCommands(t *testing.T) {
	var s State
	s.Apply(initCmd(4))
	s.Apply(openCmd(1))
	key := bytes.Repeat([]byte{7}, 32)
	steps := []struct {
		name    string
		cmd     *controllerlogpb.Command
		wantErr error
		wantRev uint64
	}{
		{"enable without an admin", authCmd(1, 1, enable(), "", key), rpcerr.ErrNoAdmin, 0},
		{"user without password or certificate", authCmd(1, 2, userAdd("root"), "", nil), rpcerr.ErrInvalidAuth, 0},
		{"bad user name", authCmd(1, 3, userAdd("a b"), "h", nil), rpcerr.ErrInvalidAuth, 0},
		{"add root", authCmd(1, 4, userAdd("root"), "hash-root", nil), nil, 1},
		{"retry of add root is answered, not applied", authCmd(1, 4, userAdd("root"), "hash-root", nil), nil, 1},
		{"add root again", authCmd(1, 5, userAdd("root"), "hash-root", nil), rpcerr.ErrUserExists, 1},
		{"grant an unknown role", authCmd(1, 6, grantRole("root", "nope"), "", nil), rpcerr.ErrRoleNotFound, 1},
		{"grant admin to an unknown user", authCmd(1, 7, grantRole("nobody", AdminRole), "", nil), rpcerr.ErrUserNotFound, 1},
		{"grant admin", authCmd(1, 8, grantRole("root", AdminRole), "", nil), nil, 2},
		{"admin is built in", authCmd(1, 9, roleAdd(AdminRole), "", nil), rpcerr.ErrRoleExists, 2},
		{"add role reader", authCmd(1, 10, roleAdd("reader"), "", nil), nil, 3},
		{"unspecified access", authCmd(1, 11, roleGrant("reader", "a/", 0), "", nil), rpcerr.ErrInvalidAuth, 3},
		{"grant read on a/", authCmd(1, 12, roleGrant("reader", "a/", controllerpb.Access_ACCESS_READ), "", nil), nil, 4},
		{"enable without a key", authCmd(1, 13, enable(), "", nil), rpcerr.ErrMalformed, 4},
		{"enable", authCmd(1, 14, enable(), "", key), nil, 5},
		{"retry of enable", authCmd(1, 14, enable(), "", key), nil, 5},
		{"delete the last admin", authCmd(1, 15, userDelete("root"), "", nil), rpcerr.ErrNoAdmin, 5},
		{"revoke the last admin", authCmd(1, 16, revokeRole("root", AdminRole), "", nil), rpcerr.ErrNoAdmin, 5},
		{"passwd of an unknown user", authCmd(1, 17, passwd("nobody"), "h", nil), rpcerr.ErrUserNotFound, 5},
		{"passwd", authCmd(1, 18, passwd("root"), "hash-root-2", nil), nil, 6},
	}
	for _, st := range steps {
		r := s.Apply(st.cmd)
		if !errors.Is(r.Err, st.wantErr) || (st.wantErr == nil) != (r.Err == nil) {
			t.Fatalf("%s: err %v, want %v", st.name, r.Err, st.wantErr)
		}
		if got := s.AuthRevision(); got != st.wantRev {
			t.Fatalf("%s: revision %d, want %d", st.name, got, st.wantRev)
		}
	}
	if !s.AuthEnabled() {
		t.Fatal("auth not enabled")
	}
	hash, epoch, ok := s.UserSecret("root")
	if !ok || string(hash) != "hash-root-2" || epoch != 6 {
		t.Fatalf("root: hash %q epoch %d ok %v; want the new hash and epoch 6 (revoking older tokens)", hash, epoch, ok)
	}
	v := s.AuthView()
	if len(v.GetPublicKey()) != 32 || len(v.GetUsers()) != 1 || v.GetUsers()[0].GetRoles()[0] != AdminRole {
		t.Fatalf("view %v", v)
	}
	if len(v.GetRoles()) != 1 || string(v.GetRoles()[0].GetPermissions()[0].GetPrefix()) != "a/" {
		t.Fatalf("roles %v", v.GetRoles())
	}
	// Disabling drops the key: tokens signed with it never work again.
	if r := s.Apply(authCmd(1, 19, &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_Disable{Disable: &controllerpb.AuthDisable{}}}, "", nil)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if _, ok := s.SigningKey(); ok || s.AuthEnabled() {
		t.Fatal("disabled auth kept its key")
	}
	// With auth off, the last admin may go.
	if r := s.Apply(authCmd(1, 20, userDelete("root"), "", nil)); r.Err != nil {
		t.Fatal(r.Err)
	}
	// A certificate common name names one user at most.
	for _, st := range []struct {
		name    string
		cmd     *controllerlogpb.Command
		wantErr error
	}{
		{"add svc by certificate", authCmd(1, 21, userAddCN("svc", "svc-cert"), "", nil), nil},
		{"a second user of the same certificate", authCmd(1, 22, userAddCN("svc2", "svc-cert"), "hash", nil), rpcerr.ErrCertCNTaken},
		{"delete svc", authCmd(1, 23, userDelete("svc"), "", nil), nil},
		{"the certificate is free again", authCmd(1, 24, userAddCN("svc2", "svc-cert"), "", nil), nil},
	} {
		if r := s.Apply(st.cmd); !errors.Is(r.Err, st.wantErr) || (st.wantErr == nil) != (r.Err == nil) {
			t.Fatalf("%s: err %v, want %v", st.name, r.Err, st.wantErr)
		}
	}
}

func TestAuthSessionsMustBeOpened(t *testing.T) {
	var s State
	s.Apply(initCmd(4))
	if r := s.Apply(authCmd(5, 1, userAdd("u"), "h", nil)); !errors.Is(r.Err, rpcerr.ErrSessionExpired) {
		t.Fatalf("unopened session: %v", r.Err)
	}
	if s.AuthRevision() != 0 {
		t.Fatal("applied in an unopened session")
	}
	if r := applyOpen(&s, authCmd(5, 1, userAdd("u"), "h", nil)); r.Err != nil {
		t.Fatal(r.Err)
	}
	// A refusal is remembered: its retry gets it again even once the
	// change would succeed.
	if r := s.Apply(authCmd(5, 2, roleGrant("r", "x", controllerpb.Access_ACCESS_READ), "", nil)); !errors.Is(r.Err, rpcerr.ErrRoleNotFound) {
		t.Fatalf("grant on a missing role: %v", r.Err)
	}
	s.Apply(authCmd(5, 3, roleAdd("r"), "", nil))
	if r := s.Apply(authCmd(5, 2, roleGrant("r", "x", controllerpb.Access_ACCESS_READ), "", nil)); !errors.Is(r.Err, rpcerr.ErrStaleRequest) {
		t.Fatalf("older request: %v", r.Err)
	}
	if r := s.Apply(authCmd(5, 3, roleAdd("r"), "", nil)); r.Err != nil {
		t.Fatalf("retry of role add: %v", r.Err)
	}
}

// TestAuthPersistsWithoutPasswords: the store keeps the auth state across
// a reopen and a snapshot, with hashes only.
func TestAuthStoreRoundTrip(t *testing.T) {
	e, r := openTestStore(t)
	st, err := OpenStore(e, r)
	if err != nil {
		t.Fatal(err)
	}
	applyAll(t, st, initCmd(4), openCmd(1), authCmd(1, 1, userAdd("root"), "hash-root", nil),
		authCmd(1, 2, grantRole("root", AdminRole), "", nil), authCmd(1, 3, enable(), "", bytes.Repeat([]byte{1}, 32)))
	again, err := OpenStore(e, r)
	if err != nil {
		t.Fatal(err)
	}
	if rev, on := again.AuthRevision(); rev != 3 || !on {
		t.Fatalf("reopened: revision %d enabled %v", rev, on)
	}
	img, err := again.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Restore(img); err != nil {
		t.Fatal(err)
	}
	if hash, _, ok := again.UserSecret("root"); !ok || string(hash) != "hash-root" {
		t.Fatalf("restored root: %q %v", hash, ok)
	}
}

func openTestStore(t *testing.T) (*storage.Engine, storage.Replica) {
	t.Helper()
	e, err := storage.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, storage.Replica{Group: 0, ID: 1}
}

// applyAll applies cmds to st as raft entries 1, 2, ...
func applyAll(t *testing.T, st *Store, cmds ...*controllerlogpb.Command) {
	t.Helper()
	var ents []raftnode.Entry
	for i, c := range cmds {
		data, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		ents = append(ents, raftnode.Entry{Index: st.Applied() + uint64(i) + 1, Term: 1, Data: data})
	}
	res, err := st.Apply(ents)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if err := r.(Result).Err; err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
}

// FuzzAuthNames: any operator-given user or role name is accepted only
// when ValidAuthName allows it, and then round-trips through the view.
func FuzzAuthNames(f *testing.F) {
	for _, s := range []string{"root", "a b", "", "x@example.com", "ü", "admin", strings.Repeat("n", MaxAuthName+1), "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		var s State
		s.Apply(initCmd(1))
		s.Apply(openCmd(1))
		user := s.Apply(authCmd(1, 1, userAdd(name), "hash", nil))
		role := s.Apply(authCmd(1, 2, roleAdd(name), "", nil))
		valid := ValidAuthName("user", name) == nil
		if (user.Err == nil) != valid {
			t.Fatalf("user add %q: %v (valid %v)", name, user.Err, valid)
		}
		if user.Err != nil && !errors.Is(user.Err, rpcerr.ErrInvalidAuth) {
			t.Fatalf("user add %q: %v is not ErrInvalidAuth", name, user.Err)
		}
		if (role.Err == nil) != (valid && name != AdminRole) {
			t.Fatalf("role add %q: %v", name, role.Err)
		}
		if valid && s.AuthView().GetUsers()[0].GetName() != name {
			t.Fatalf("view of user %q: %v", name, s.AuthView())
		}
	})
}
