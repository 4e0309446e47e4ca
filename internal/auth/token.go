package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// TokenTTL is how long a token is valid after it is issued (etcd's simple
// token TTL).
const TokenTTL = 5 * time.Minute

// MaxClockSkew is how far ahead of a server's clock the controller replica
// that issued a token may be: a token expiring later than now + TokenTTL +
// MaxClockSkew was not issued by this cluster's controller (a forged,
// long-lived token is refused even when signed with the cluster's key).
const MaxClockSkew = time.Minute

// tokenVersion prefixes every token, so that another format can follow.
const tokenVersion = "v1"

// Claims is what a token says: who, under which epoch of the user (see
// controllerpb.AuthUser.epoch: a password change or a deletion revokes the
// token), at which auth revision it was issued, and until when.
type Claims struct {
	User     string `json:"u"`
	Epoch    uint64 `json:"e"`
	Revision uint64 `json:"r"`
	Expires  int64  `json:"x"` // unix milliseconds, wall clock
}

// Sign returns the token of c: "v1.<base64url JSON claims>.<base64url
// ed25519 signature of the JSON>".
func Sign(key ed25519.PrivateKey, c Claims) string {
	payload, _ := json.Marshal(c) // a struct of strings and numbers cannot fail
	return tokenVersion + "." + base64.RawURLEncoding.EncodeToString(payload) + "." +
		base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, payload))
}

// Verify checks token's signature with pub and its expiry against now (it
// must lie after now and at most TokenTTL + MaxClockSkew ahead), and
// returns its claims. Every failure is rpcerr.ErrAuthFailed, wrapped;
// the message never repeats the token.
func Verify(pub ed25519.PublicKey, token string, now time.Time) (Claims, error) {
	version, rest, ok := strings.Cut(token, ".")
	enc, sigEnc, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || version != tokenVersion {
		return Claims{}, fmt.Errorf("%w: malformed token", rpcerr.ErrAuthFailed)
	}
	payload, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: malformed token", rpcerr.ErrAuthFailed)
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigEnc)
	if err != nil || len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, payload, sig) {
		return Claims{}, fmt.Errorf("%w: token not signed by this cluster's current key", rpcerr.ErrAuthFailed)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: malformed token", rpcerr.ErrAuthFailed)
	}
	if now.UnixMilli() >= c.Expires {
		return Claims{}, fmt.Errorf("%w: token of %s expired at %s", rpcerr.ErrAuthFailed, c.User, time.UnixMilli(c.Expires).UTC().Format(time.RFC3339))
	}
	if c.Expires > now.Add(TokenTTL+MaxClockSkew).UnixMilli() {
		return Claims{}, fmt.Errorf("%w: token of %s expires at %s, later than a token this cluster issues", rpcerr.ErrAuthFailed, c.User, time.UnixMilli(c.Expires).UTC().Format(time.RFC3339))
	}
	return c, nil
}

// unverifiedRevision is the revision token claims, unverified (0 when it
// is malformed): only to tell a token of a state this server has not
// learned yet from a bad one.
func unverifiedRevision(token string) uint64 {
	_, rest, _ := strings.Cut(token, ".")
	enc, _, _ := strings.Cut(rest, ".")
	payload, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return 0
	}
	var c Claims
	if json.Unmarshal(payload, &c) != nil {
		return 0
	}
	return c.Revision
}
