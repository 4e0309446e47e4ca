package group

import (
	"bytes"
	"fmt"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/storage"
)

// applyWrite applies a client write exactly once per session sequence
// number, if the group serves the key's shard at this point of the log.
func (sm *StateMachine) applyWrite(a *apply, w *kvpb.WriteRequest, stamp int64) (outcome, err error) {
	shard := sm.shardOf(w.GetKey())
	if err := sm.ownership(shard); err != nil {
		return err, nil // refused: nothing recorded
	}
	rec, found, err := sm.session(a, shard, w.GetClientId())
	if err != nil {
		return nil, err
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
		rec := &kvpb.SessionRecord{ClientId: w.GetClientId(), Seq: w.GetSeq(), LastSeen: stamp, ErrorCode: errorCode(outcome)}
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
