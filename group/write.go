package group

import (
	"bytes"
	"fmt"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/storage"
)

// applyWrite applies a client write exactly once per session sequence
// number, if the group serves the key's shard at this point of the log.
//
// Sessions are opened explicitly (WRITE_OP_OPEN_SESSION, which creates the
// record with sequence 0 and is idempotent). A write naming a session the
// shard does not know (never opened, or expired) may be a retry of a
// request applied before the session expired, so it is refused with
// ErrSessionExpired and nothing is applied (Raft dissertation, section
// 6.3: the state machine must not guess that a request is new).
func (sm *StateMachine) applyWrite(a *apply, w *kvpb.WriteRequest, now int64) (outcome, err error) {
	if !kvpb.KnownWriteOp(w.GetOp()) {
		return fmt.Errorf("%w: unknown write op %d", ErrMalformed, w.GetOp()), nil
	}
	shard := sm.shardOf(w.GetKey())
	if err := sm.ownership(shard); err != nil {
		return err, nil // refused: nothing recorded
	}
	rec, found, err := sm.session(a, shard, w.GetClientId())
	if err != nil {
		return nil, err
	}
	if w.GetOp() == kvpb.WriteOp_WRITE_OP_OPEN_SESSION {
		if w.GetClientId() == 0 || w.GetSeq() != 0 {
			return fmt.Errorf("%w: a session is opened with a client id and sequence 0", ErrMalformed), nil
		}
		if found {
			return nil, nil // a retry, or a session already in use
		}
		return nil, sm.putSession(a, shard, &grouppb.SessionRecord{ClientId: w.GetClientId(), LastSeen: now})
	}
	if w.GetClientId() != 0 && w.GetSeq() == 0 {
		return fmt.Errorf("%w: sequence 0 is the session's opening, not a write", ErrMalformed), nil
	}
	if !found && w.GetClientId() != 0 {
		return fmt.Errorf("%w: client %d sequence %d in shard %d", ErrSessionExpired, w.GetClientId(), w.GetSeq(), shard), nil
	}
	if found {
		switch {
		case w.GetSeq() == rec.GetSeq():
			return codeError(rec.GetErrorCode()), nil // a retry: same outcome, applied once
		case w.GetSeq() < rec.GetSeq():
			return ErrStaleRequest, nil
		}
	}
	outcome, err = sm.writeData(a, shard, w)
	if err != nil {
		return nil, err
	}
	if w.GetClientId() != 0 {
		rec := &grouppb.SessionRecord{ClientId: w.GetClientId(), Seq: w.GetSeq(), LastSeen: now, ErrorCode: errorCode(outcome)}
		if err := sm.putSession(a, shard, rec); err != nil {
			return nil, err
		}
	}
	return outcome, nil
}

func (sm *StateMachine) writeData(a *apply, shard int, w *kvpb.WriteRequest) (outcome, err error) {
	if outcome := sm.limits.Check(w.GetOp(), w.GetKey(), w.GetValue()); outcome != nil {
		return outcome, nil
	}
	k := sm.dataKey(shard, w.GetKey())
	switch w.GetOp() {
	case kvpb.WriteOp_WRITE_OP_PUT:
		return nil, a.b.Set(k, w.GetValue(), nil)
	case kvpb.WriteOp_WRITE_OP_DELETE:
		return nil, a.b.Delete(k, nil)
	case kvpb.WriteOp_WRITE_OP_APPEND:
		old, _, err := storage.Get(a.b, k)
		if err != nil {
			return nil, err
		}
		if n := len(old) + len(w.GetValue()); n > sm.limits.MaxValueSize {
			return fmt.Errorf("%w: append would make %d bytes, limit %d", ErrValueTooLarge, n, sm.limits.MaxValueSize), nil
		}
		return nil, a.b.Set(k, append(old, w.GetValue()...), nil)
	}
	return fmt.Errorf("%w: unknown write op %d", ErrMalformed, w.GetOp()), nil
}

// CheckWrite tells, before proposing, whether the write would be refused
// by this replica's applied state: bad input, or a shard not served here.
// Apply checks again, since the state may change before the entry commits.
func (sm *StateMachine) CheckWrite(op kvpb.WriteOp, key, value []byte) error {
	if err := sm.limits.Check(op, key, value); err != nil {
		return err
	}
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.ownership(sm.shardOf(key))
}

// Get reads key from the applied state, if the group serves its shard.
// For a linearizable read, confirm a read index first.
func (sm *StateMachine) Get(key []byte) (value []byte, found bool, err error) {
	if err := sm.limits.Check(kvpb.WriteOp_WRITE_OP_DELETE, key, nil); err != nil {
		return nil, false, err
	}
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	shard := sm.shardOf(key)
	if err := sm.ownership(shard); err != nil {
		return nil, false, err
	}
	v, found, err := storage.Get(sm.db, sm.dataKey(shard, key))
	if err != nil {
		return nil, false, fmt.Errorf("read key of shard %d: %w", shard, err)
	}
	return bytes.Clone(v), found, nil
}
