package auth

import (
	"testing"
	"time"
)

// BenchmarkAuthenticateToken is the per-request cost of a token check
// (the guard's, for every call while auth is on).
func BenchmarkAuthenticateToken(b *testing.B) {
	v, key := testView(&testing.T{})
	now := time.Now()
	tok := Sign(key, Claims{User: "alice", Epoch: 2, Revision: 9, Expires: now.Add(TokenTTL).UnixMilli()})
	for b.Loop() {
		if _, err := v.Authenticate(tok, nil, now); err != nil {
			b.Fatal(err)
		}
	}
}
