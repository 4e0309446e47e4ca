package storage

import (
	"encoding/binary"

	"github.com/cockroachdb/pebble/v2"
)

// The suffixes of a replica's state machine space that hold its Progress
// (8 bytes each, big endian); the state machine keys the rest.
const (
	// SuffixApplied holds Progress.Applied: the index of the last log
	// entry applied.
	SuffixApplied = 'a'
	// SuffixNow holds Progress.Now: the replicated time at that entry, in
	// unix milliseconds.
	SuffixNow = 't'
)

// Progress is how far a replica's state machine has come: Applied is the
// index of the last log entry its state reflects, and Now the replicated
// time at that entry (unix ms; see session.Advance). Both are written in
// the batch that moves them, with the effects of the entries applied (or
// the image restored), so that after a crash they describe the state on
// disk exactly.
type Progress struct {
	Applied uint64
	Now     int64
}

// ReadProgress reads r's progress: zero for a new state machine.
func (r Replica) ReadProgress(db pebble.Reader) (Progress, error) {
	var p Progress
	if v, ok, err := Get(db, r.StateKey(SuffixApplied)); err != nil {
		return Progress{}, err
	} else if ok {
		p.Applied = binary.BigEndian.Uint64(v)
	}
	if v, ok, err := Get(db, r.StateKey(SuffixNow)); err != nil {
		return Progress{}, err
	} else if ok {
		p.Now = int64(binary.BigEndian.Uint64(v))
	}
	return p, nil
}

// WriteProgress sets r's progress to p in b.
func (r Replica) WriteProgress(b *pebble.Batch, p Progress) error {
	if err := b.Set(r.StateKey(SuffixApplied), binary.BigEndian.AppendUint64(nil, p.Applied), nil); err != nil {
		return err
	}
	return b.Set(r.StateKey(SuffixNow), binary.BigEndian.AppendUint64(nil, uint64(p.Now)), nil)
}
