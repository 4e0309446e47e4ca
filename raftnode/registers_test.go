package raftnode_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// registers is the test state machine: string registers with put and
// append, kept in Pebble with the applied index in the same batch, the way
// real state machines must.
type registers struct {
	db *pebble.DB
	r  storage.Replica

	mu       sync.Mutex
	applied  uint64
	restores int
}

var appliedSuffix = []byte("applied")

func dataKey(key string) []byte { return append([]byte("d/"), key...) }

func openRegisters(e *storage.Engine, r storage.Replica) (*registers, error) {
	s := &registers{db: e.DB(), r: r}
	v, ok, err := storage.Get(s.db, r.StateKey(appliedSuffix...))
	if err != nil {
		return nil, err
	}
	if ok {
		s.applied = binary.BigEndian.Uint64(v)
	}
	return s, nil
}

// A command is op ('p' put, 'a' append), then uvarint key length, key, value.
func encodeCmd(op byte, key, value string) []byte {
	b := []byte{op}
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

func decodeCmd(b []byte) (op byte, key, value string, err error) {
	if len(b) < 2 {
		return 0, "", "", errors.New("short command")
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || uint64(len(b)-1-k) < n {
		return 0, "", "", errors.New("bad key length")
	}
	rest := b[1+k:]
	return b[0], string(rest[:n]), string(rest[n:]), nil
}

func (s *registers) Applied() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

func (s *registers) Apply(ents []raftnode.Entry) ([]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	results := make([]any, len(ents))
	last, err := raftnode.Commands(ents, s.applied, func(i int, e raftnode.Entry) error {
		op, key, value, err := decodeCmd(e.Data)
		if err != nil {
			results[i] = err
			return nil
		}
		k := s.r.StateKey(dataKey(key)...)
		if op == 'a' {
			old, _, err := storage.Get(b, k)
			if err != nil {
				return err
			}
			value = string(old) + value
		}
		results[i] = value
		return b.Set(k, []byte(value), nil)
	})
	if err != nil {
		return nil, err
	}
	if err := b.Set(s.r.StateKey(appliedSuffix...), binary.BigEndian.AppendUint64(nil, last), nil); err != nil {
		return nil, err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, err
	}
	s.applied = last
	return results, nil
}

// Snapshot encodes applied index then (uvarint len, key, uvarint len,
// value) pairs.
func (s *registers) Snapshot() ([]byte, error) {
	s.mu.Lock()
	snap := s.db.NewSnapshot()
	applied := s.applied
	s.mu.Unlock()
	defer snap.Close()
	if d := snapshotDelay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	out := binary.BigEndian.AppendUint64(nil, applied)
	lo, hi := s.r.StateSpan(dataKey("")...)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()[len(lo):]
		out = binary.AppendUvarint(out, uint64(len(k)))
		out = append(out, k...)
		out = binary.AppendUvarint(out, uint64(len(it.Value())))
		out = append(out, it.Value()...)
	}
	return out, it.Error()
}

func (s *registers) Restore(image []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(image) < 8 {
		return errors.New("short image")
	}
	applied := binary.BigEndian.Uint64(image)
	b := s.db.NewBatch()
	defer b.Close()
	lo, hi := s.r.StateSpan(dataKey("")...)
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return err
	}
	rest := image[8:]
	for len(rest) > 0 {
		var kv [2][]byte
		for j := range kv {
			n, k := binary.Uvarint(rest)
			if k <= 0 || uint64(len(rest)-k) < n {
				return fmt.Errorf("corrupt image")
			}
			kv[j], rest = rest[k:k+int(n)], rest[k+int(n):]
		}
		if err := b.Set(append(append([]byte(nil), lo...), kv[0]...), kv[1], nil); err != nil {
			return err
		}
	}
	if err := b.Set(s.r.StateKey(appliedSuffix...), binary.BigEndian.AppendUint64(nil, applied), nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	s.applied = applied
	s.restores++
	return nil
}

func (s *registers) get(key string) (string, bool) {
	v, ok, err := storage.Get(s.db, s.r.StateKey(dataKey(key)...))
	if err != nil {
		panic(err)
	}
	return string(v), ok
}

func (s *registers) restoreCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restores
}

// snapshotDelay, in nanoseconds, slows every registers.Snapshot: a test
// makes the image of a large state that takes long to build.
var snapshotDelay atomic.Int64
