package controller

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
)

// AdminRole is the built-in role that allows everything: every key, and
// every admin RPC (join, leave, move, membership, backup, auth changes).
const AdminRole = auth.AdminRole

// MaxAuthName is the longest user or role name, in bytes.
const MaxAuthName = 128

// ValidAuthName reports (as rpcerr.ErrInvalidAuth) a user or role name
// that is empty, longer than MaxAuthName bytes, or holds anything but
// letters, digits and . _ - @ (names appear in logs and CLI output).
func ValidAuthName(kind, name string) error {
	if name == "" || len(name) > MaxAuthName {
		return fmt.Errorf("%w: a %s name has 1 to %d bytes", rpcerr.ErrInvalidAuth, kind, MaxAuthName)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@", r)) {
			return fmt.Errorf("%w: %s name %q: only letters, digits and . _ - @", rpcerr.ErrInvalidAuth, kind, name)
		}
	}
	return nil
}

// auth returns the auth image, creating the empty one.
func (s *State) authImage() *controllerlogpb.AuthImage {
	if s.auth == nil {
		s.auth = &controllerlogpb.AuthImage{}
	}
	return s.auth
}

// AuthEnabled reports whether auth is enabled.
func (s *State) AuthEnabled() bool { return s.auth.GetEnabled() }

// AuthRevision is the auth revision: 0 before any auth change, one higher
// after each.
func (s *State) AuthRevision() uint64 { return s.auth.GetRevision() }

// AuthView returns the public auth state (no hash, no private key) for
// groups and admins; the reply's header is left empty. It shares nothing
// with the state.
func (s *State) AuthView() *controllerpb.AuthStateReply {
	a := s.auth
	out := &controllerpb.AuthStateReply{Enabled: a.GetEnabled(), Revision: a.GetRevision()}
	for _, u := range a.GetUsers() {
		out.Users = append(out.Users, proto.Clone(u.GetUser()).(*controllerpb.AuthUser))
	}
	for _, r := range a.GetRoles() {
		out.Roles = append(out.Roles, proto.Clone(r).(*controllerpb.AuthRole))
	}
	if a.GetEnabled() && len(a.GetSigningKey()) == ed25519.SeedSize {
		out.PublicKey = ed25519.NewKeyFromSeed(a.GetSigningKey()).Public().(ed25519.PublicKey)
	}
	return out
}

// UserSecret returns user name's bcrypt hash (empty when it has no
// password) and epoch; ok is false when there is no such user.
func (s *State) UserSecret(name string) (hash []byte, epoch uint64, ok bool) {
	u := s.findUser(name)
	if u == nil {
		return nil, 0, false
	}
	return slices.Clone(u.GetPasswordHash()), u.GetUser().GetEpoch(), true
}

// SigningKey returns the token-signing key; ok is false while auth is off.
func (s *State) SigningKey() (key ed25519.PrivateKey, ok bool) {
	a := s.auth
	if !a.GetEnabled() || len(a.GetSigningKey()) != ed25519.SeedSize {
		return nil, false
	}
	return ed25519.NewKeyFromSeed(a.GetSigningKey()), true
}

func (s *State) findUser(name string) *controllerlogpb.AuthUserRecord {
	for _, u := range s.auth.GetUsers() {
		if u.GetUser().GetName() == name {
			return u
		}
	}
	return nil
}

// existingUser is findUser for a change that needs the user: its absence
// is rpcerr.ErrUserNotFound, naming it.
func (s *State) existingUser(name string) (*controllerlogpb.AuthUserRecord, error) {
	if u := s.findUser(name); u != nil {
		return u, nil
	}
	return nil, fmt.Errorf("%w: %s", rpcerr.ErrUserNotFound, name)
}

func (s *State) findRole(name string) *controllerpb.AuthRole {
	for _, r := range s.auth.GetRoles() {
		if r.GetName() == name {
			return r
		}
	}
	return nil
}

// roleExists counts the built-in admin role.
func (s *State) roleExists(name string) bool { return name == AdminRole || s.findRole(name) != nil }

// hasAdmin reports whether some user other than except has the admin role.
func (s *State) hasAdmin(except string) bool {
	for _, u := range s.auth.GetUsers() {
		if u.GetUser().GetName() != except && slices.Contains(u.GetUser().GetRoles(), AdminRole) {
			return true
		}
	}
	return false
}

// applyAuth applies one auth change. Every change that succeeds raises the
// revision by one, even one that changes nothing visible (enabling an
// enabled cluster), so a client's retry and a group's follower see one
// order of revisions. A refusal changes nothing.
func (s *State) applyAuth(cmd *controllerlogpb.AuthCommand) error {
	a := s.authImage()
	next := a.GetRevision() + 1
	if err := s.applyAuthChange(a, cmd, next); err != nil {
		return err
	}
	a.Revision = next
	s.authChanged = true
	return nil
}

// applyAuthChange makes cmd's change to a, the auth image at revision
// next-1, or refuses it changing nothing.
func (s *State) applyAuthChange(a *controllerlogpb.AuthImage, cmd *controllerlogpb.AuthCommand, next uint64) error {
	ch := cmd.GetChange()
	switch op := ch.GetOp().(type) {
	case *controllerpb.AuthChangeRequest_Enable:
		if !s.hasAdmin("") {
			return fmt.Errorf("%w: add a user and grant it the %s role first", rpcerr.ErrNoAdmin, AdminRole)
		}
		if !a.GetEnabled() {
			if len(cmd.GetSigningKey()) != ed25519.SeedSize {
				return fmt.Errorf("%w: auth enable without a signing key", rpcerr.ErrMalformed)
			}
			a.SigningKey = slices.Clone(cmd.GetSigningKey())
		}
		a.Enabled = true
		return nil
	case *controllerpb.AuthChangeRequest_Disable:
		// The key goes: tokens signed before stop working for good, even
		// if auth is enabled again (with a new key).
		a.Enabled, a.SigningKey = false, nil
		return nil
	case *controllerpb.AuthChangeRequest_UserAdd:
		return s.userAdd(a, op.UserAdd, cmd.GetPasswordHash(), next)
	case *controllerpb.AuthChangeRequest_UserDelete:
		return s.userDelete(a, op.UserDelete.GetName())
	case *controllerpb.AuthChangeRequest_UserPasswd:
		return s.userPasswd(op.UserPasswd.GetName(), cmd.GetPasswordHash(), next)
	case *controllerpb.AuthChangeRequest_UserGrantRole:
		return s.userGrantRole(op.UserGrantRole)
	case *controllerpb.AuthChangeRequest_UserRevokeRole:
		return s.userRevokeRole(a, op.UserRevokeRole)
	case *controllerpb.AuthChangeRequest_RoleAdd:
		return s.roleAdd(a, op.RoleAdd.GetName())
	case *controllerpb.AuthChangeRequest_RoleDelete:
		return s.roleDelete(a, op.RoleDelete.GetName())
	case *controllerpb.AuthChangeRequest_RoleGrant:
		return s.rolePermission(op.RoleGrant, false)
	case *controllerpb.AuthChangeRequest_RoleRevoke:
		return s.rolePermission(op.RoleRevoke, true)
	default:
		return fmt.Errorf("%w: empty auth change", rpcerr.ErrMalformed)
	}
}

func (s *State) userAdd(a *controllerlogpb.AuthImage, add *controllerpb.UserAdd, passwordHash []byte, next uint64) error {
	name := add.GetName()
	if err := ValidAuthName("user", name); err != nil {
		return err
	}
	if s.findUser(name) != nil {
		return fmt.Errorf("%w: %s", rpcerr.ErrUserExists, name)
	}
	if len(passwordHash) == 0 && add.GetCertCn() == "" {
		return fmt.Errorf("%w: user %s needs a password or a certificate common name", rpcerr.ErrInvalidAuth, name)
	}
	if cn := add.GetCertCn(); cn != "" {
		for _, u := range a.GetUsers() {
			if u.GetUser().GetCertCn() == cn {
				return fmt.Errorf("%w: %q names user %s", rpcerr.ErrCertCNTaken, cn, u.GetUser().GetName())
			}
		}
	}
	u := &controllerlogpb.AuthUserRecord{User: &controllerpb.AuthUser{Name: name, CertCn: add.GetCertCn(), Epoch: next},
		PasswordHash: slices.Clone(passwordHash)}
	a.Users = append(a.Users, u)
	slices.SortFunc(a.Users, func(x, y *controllerlogpb.AuthUserRecord) int {
		return strings.Compare(x.GetUser().GetName(), y.GetUser().GetName())
	})
	return nil
}

func (s *State) userDelete(a *controllerlogpb.AuthImage, name string) error {
	if _, err := s.existingUser(name); err != nil {
		return err
	}
	if a.GetEnabled() && !s.hasAdmin(name) {
		return fmt.Errorf("%w: %s is the last user with the %s role (disable auth first)", rpcerr.ErrNoAdmin, name, AdminRole)
	}
	a.Users = slices.DeleteFunc(a.Users, func(u *controllerlogpb.AuthUserRecord) bool { return u.GetUser().GetName() == name })
	return nil
}

func (s *State) userPasswd(name string, passwordHash []byte, next uint64) error {
	u, err := s.existingUser(name)
	if err != nil {
		return err
	}
	if len(passwordHash) == 0 {
		return fmt.Errorf("%w: empty password", rpcerr.ErrInvalidAuth)
	}
	// A new epoch revokes the tokens issued under the old password.
	u.PasswordHash, u.User.Epoch = slices.Clone(passwordHash), next
	return nil
}

func (s *State) userGrantRole(ur *controllerpb.UserRole) error {
	u, err := s.existingUser(ur.GetUser())
	role := ur.GetRole()
	switch {
	case err != nil:
		return err
	case !s.roleExists(role):
		return fmt.Errorf("%w: %s", rpcerr.ErrRoleNotFound, role)
	}
	if !slices.Contains(u.User.Roles, role) {
		u.User.Roles = append(u.User.Roles, role)
		slices.Sort(u.User.Roles)
	}
	return nil
}

func (s *State) userRevokeRole(a *controllerlogpb.AuthImage, ur *controllerpb.UserRole) error {
	u, err := s.existingUser(ur.GetUser())
	role := ur.GetRole()
	switch {
	case err != nil:
		return err
	case !slices.Contains(u.GetUser().GetRoles(), role):
		return fmt.Errorf("%w: user %s does not have role %s", rpcerr.ErrRoleNotFound, u.GetUser().GetName(), role)
	case role == AdminRole && a.GetEnabled() && !s.hasAdmin(u.GetUser().GetName()):
		return fmt.Errorf("%w: %s is the last user with the %s role (disable auth first)", rpcerr.ErrNoAdmin, u.GetUser().GetName(), AdminRole)
	}
	u.User.Roles = slices.DeleteFunc(u.User.Roles, func(r string) bool { return r == role })
	return nil
}

func (s *State) roleAdd(a *controllerlogpb.AuthImage, name string) error {
	if err := ValidAuthName("role", name); err != nil {
		return err
	}
	if s.roleExists(name) {
		return fmt.Errorf("%w: %s", rpcerr.ErrRoleExists, name)
	}
	a.Roles = append(a.Roles, &controllerpb.AuthRole{Name: name})
	slices.SortFunc(a.Roles, func(x, y *controllerpb.AuthRole) int { return strings.Compare(x.GetName(), y.GetName()) })
	return nil
}

func (s *State) roleDelete(a *controllerlogpb.AuthImage, name string) error {
	if name == AdminRole {
		return fmt.Errorf("%w: the %s role is built in", rpcerr.ErrInvalidAuth, AdminRole)
	}
	if s.findRole(name) == nil {
		return fmt.Errorf("%w: %s", rpcerr.ErrRoleNotFound, name)
	}
	a.Roles = slices.DeleteFunc(a.Roles, func(r *controllerpb.AuthRole) bool { return r.GetName() == name })
	for _, u := range a.Users {
		u.User.Roles = slices.DeleteFunc(u.User.Roles, func(r string) bool { return r == name })
	}
	return nil
}

// rolePermission grants rp's permission to its role, or revokes the
// role's permission on rp's prefix. A role holds one permission per
// prefix: granting again replaces it (etcd's rule), so a grant of READ
// after READWRITE narrows it.
func (s *State) rolePermission(rp *controllerpb.RolePermission, revoke bool) error {
	if rp.GetRole() == AdminRole {
		return fmt.Errorf("%w: the %s role is built in: it allows everything", rpcerr.ErrInvalidAuth, AdminRole)
	}
	r := s.findRole(rp.GetRole())
	if r == nil {
		return fmt.Errorf("%w: %s", rpcerr.ErrRoleNotFound, rp.GetRole())
	}
	p := rp.GetPermission()
	i := slices.IndexFunc(r.Permissions, func(q *controllerpb.Permission) bool { return bytes.Equal(q.GetPrefix(), p.GetPrefix()) })
	if revoke {
		if i < 0 {
			return fmt.Errorf("%w: role %s has no permission on prefix %q", rpcerr.ErrInvalidAuth, r.GetName(), p.GetPrefix())
		}
		r.Permissions = slices.Delete(r.Permissions, i, i+1)
		return nil
	}
	if p.GetAccess() < controllerpb.Access_ACCESS_READ || p.GetAccess() > controllerpb.Access_ACCESS_READWRITE {
		return fmt.Errorf("%w: access %v", rpcerr.ErrInvalidAuth, p.GetAccess())
	}
	if len(p.GetPrefix()) > auth.MaxPrefix {
		return fmt.Errorf("%w: a prefix has at most %d bytes", rpcerr.ErrInvalidAuth, auth.MaxPrefix)
	}
	if i >= 0 {
		r.Permissions[i] = proto.Clone(p).(*controllerpb.Permission)
	} else {
		r.Permissions = append(r.Permissions, proto.Clone(p).(*controllerpb.Permission))
		slices.SortFunc(r.Permissions, func(x, y *controllerpb.Permission) int { return bytes.Compare(x.GetPrefix(), y.GetPrefix()) })
	}
	return nil
}
