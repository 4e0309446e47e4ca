package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
)

// AdminRole is the built-in role that allows everything: every key and
// every admin RPC (controller.AdminRole, which the state machine knows).
const AdminRole = "admin"

// View is the auth state a server enforces: the public part of the
// controller's (no hash, no private key). It is immutable; a server swaps
// in a new one when the revision changes.
type View struct {
	Enabled  bool
	Revision uint64
	pub      ed25519.PublicKey
	users    map[string]*controllerpb.AuthUser
	byCN     map[string]string // certificate common name -> user
	roles    map[string][]*controllerpb.Permission

	// verified caches the claims of tokens whose signature checked (an
	// ed25519 verification costs about 50 µs, more than a Get): a token
	// is verified once per view, then its expiry and epoch are checked on
	// every call. Cleared when it reaches maxVerified tokens.
	verified sync.Map // token -> Claims
	cached   atomic.Int64
}

// maxVerified bounds the tokens a view remembers as verified.
const maxVerified = 4096

// NewView compiles the public state r (nil: auth off, revision 0).
func NewView(r *controllerpb.AuthStateReply) *View {
	v := &View{Enabled: r.GetEnabled(), Revision: r.GetRevision(), pub: ed25519.PublicKey(r.GetPublicKey()),
		users: map[string]*controllerpb.AuthUser{}, byCN: map[string]string{}, roles: map[string][]*controllerpb.Permission{}}
	for _, u := range r.GetUsers() {
		v.users[u.GetName()] = u
		if cn := u.GetCertCn(); cn != "" {
			v.byCN[cn] = u.GetName()
		}
	}
	for _, role := range r.GetRoles() {
		v.roles[role.GetName()] = role.GetPermissions()
	}
	return v
}

// Authenticate returns the user a token (if not empty) or else a verified
// client certificate (if not nil) names. Failures are rpcerr.ErrAuthFailed:
// no credentials, a bad or expired token, or a token whose user was deleted
// or changed password since (its epoch is not the user's).
func (v *View) Authenticate(token string, cert *x509.Certificate, now time.Time) (string, error) {
	user, _, err := v.authenticate(token, cert, now)
	return user, err
}

// authenticate is Authenticate, also returning the token's expiry (zero
// when a certificate authenticated).
func (v *View) authenticate(token string, cert *x509.Certificate, now time.Time) (string, time.Time, error) {
	if token != "" {
		c, err := v.verify(token, now)
		if err != nil {
			if r := unverifiedRevision(token); r > v.Revision {
				// Maybe signed by a key this view does not know yet (auth
				// disabled and enabled again since).
				return "", time.Time{}, fmt.Errorf("%w: the token was issued at auth revision %d, this server knows %d (%w)", errBehind, r, v.Revision, err)
			}
			return "", time.Time{}, err
		}
		if c.Revision > v.Revision {
			return "", time.Time{}, fmt.Errorf("%w: the token was issued at auth revision %d, this server knows %d", errBehind, c.Revision, v.Revision)
		}
		u, ok := v.users[c.User]
		if !ok || u.GetEpoch() != c.Epoch {
			return "", time.Time{}, fmt.Errorf("%w: the token of %s was revoked (the user was deleted or changed password)", rpcerr.ErrAuthFailed, c.User)
		}
		return c.User, time.UnixMilli(c.Expires), nil
	}
	if cert != nil {
		if name, ok := v.byCN[cert.Subject.CommonName]; ok {
			return name, time.Time{}, nil
		}
		return "", time.Time{}, fmt.Errorf("%w: client certificate %q names no user", rpcerr.ErrAuthFailed, cert.Subject.CommonName)
	}
	return "", time.Time{}, fmt.Errorf("%w: no credentials (a token, or a client certificate of a user)", rpcerr.ErrAuthFailed)
}

// errBehind: a token was issued at an auth revision above the view's:
// the server has not learned its user, role or key yet (the guard answers
// Unavailable, which clients retry, not ErrAuthFailed).
var errBehind = errors.New("auth: this server has not learned the token's auth state yet")

// verify is Verify with the view's key, remembering the tokens whose
// signature checked.
func (v *View) verify(token string, now time.Time) (Claims, error) {
	if c, ok := v.verified.Load(token); ok {
		c := c.(Claims)
		if now.UnixMilli() >= c.Expires {
			v.verified.Delete(token)
			return Verify(v.pub, token, now) // the expiry's error
		}
		return c, nil
	}
	c, err := Verify(v.pub, token, now)
	if err != nil {
		return c, err
	}
	if v.cached.Add(1) > maxVerified {
		v.verified.Clear()
		v.cached.Store(1)
	}
	v.verified.Store(token, c)
	return c, nil
}

// IsAdmin reports whether user has the admin role.
func (v *View) IsAdmin(user string) bool {
	return slices.Contains(v.users[user].GetRoles(), AdminRole)
}

// CanRange reports whether user may access (READ or WRITE) every key of
// [start, end) (end nil or empty: no end): the prefixes of the user's
// permissions with that access, over all its roles, together cover the
// range (etcd merges a user's permissions so too). The admin role covers
// everything.
func (v *View) CanRange(user string, start, end []byte, need controllerpb.Access) bool {
	if v.IsAdmin(user) {
		return true
	}
	// The keys with prefix p are [p, PrefixEnd(p)); sweep those intervals
	// in order from start, as far as they reach without a gap.
	type interval struct{ lo, hi []byte } // hi nil: no end
	var ivs []interval
	for _, role := range v.users[user].GetRoles() {
		for _, p := range v.roles[role] {
			if p.GetAccess()&need == need {
				ivs = append(ivs, interval{p.GetPrefix(), kvpb.PrefixEnd(p.GetPrefix())})
			}
		}
	}
	slices.SortFunc(ivs, func(a, b interval) int { return bytes.Compare(a.lo, b.lo) })
	covered := start // every key of [start, covered) is allowed
	for _, iv := range ivs {
		if bytes.Compare(iv.lo, covered) > 0 {
			break // a gap: the keys of [covered, iv.lo) are not allowed
		}
		if iv.hi == nil {
			return true
		}
		if bytes.Compare(iv.hi, covered) > 0 {
			covered = iv.hi
		}
		if len(end) > 0 && bytes.Compare(covered, end) >= 0 {
			return true
		}
	}
	return false
}

// ParseAccess reads an operator's access name: read, write or readwrite
// (any case; also r, w, rw).
func ParseAccess(s string) (controllerpb.Access, error) {
	switch strings.ToLower(s) {
	case "read", "r":
		return controllerpb.Access_ACCESS_READ, nil
	case "write", "w":
		return controllerpb.Access_ACCESS_WRITE, nil
	case "readwrite", "rw", "read-write":
		return controllerpb.Access_ACCESS_READWRITE, nil
	}
	return 0, fmt.Errorf("%w: access %q is not read, write or readwrite", rpcerr.ErrInvalidAuth, s)
}

// MaxPrefix is the longest permission prefix, in bytes (the longest key).
const MaxPrefix = 4096

// ParsePermission reads an operator's permission: an access name and a
// key prefix (empty: every key).
func ParsePermission(access, prefix string) (*controllerpb.Permission, error) {
	a, err := ParseAccess(access)
	if err != nil {
		return nil, err
	}
	if len(prefix) > MaxPrefix {
		return nil, fmt.Errorf("%w: a prefix has at most %d bytes", rpcerr.ErrInvalidAuth, MaxPrefix)
	}
	return &controllerpb.Permission{Prefix: []byte(prefix), Access: a}, nil
}

// FormatAccess is the operator's name of a: read, write or readwrite.
func FormatAccess(a controllerpb.Access) string {
	switch a {
	case controllerpb.Access_ACCESS_READ:
		return "read"
	case controllerpb.Access_ACCESS_WRITE:
		return "write"
	case controllerpb.Access_ACCESS_READWRITE:
		return "readwrite"
	}
	return fmt.Sprintf("access(%d)", int32(a))
}
