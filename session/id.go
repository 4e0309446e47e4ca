package session

import (
	"crypto/rand"
	"encoding/binary"
)

// NewID returns a new client session id: 64 random bits from crypto/rand
// with the lowest set, so never 0 (which no table accepts). Clients open
// many sessions over their life; random ids need no coordination and
// collide with probability about n²/2⁶⁴.
func NewID() uint64 {
	var id [8]byte
	_, _ = rand.Read(id[:])
	return binary.BigEndian.Uint64(id[:]) | 1
}
