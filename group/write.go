package group

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
)

// WriteResult is the answer to a write the state machine applied (Apply's
// result for its entry; a refused or failed write's result is an error).
type WriteResult struct {
	// Succeeded is whether the write changed the key: false only when its
	// condition did not hold.
	Succeeded bool
	// Version is the key's version after the write: the new one if it
	// succeeded (0 after a delete), the current one otherwise.
	Version uint64
	// Value is the key's value after the write (nil when absent), only
	// when the request asked for it and ValueReturned is set: a retry of
	// an applied write gets Succeeded and Version from its session record,
	// which does not keep values.
	Value         []byte
	ValueReturned bool
}

// applyWrites applies a batch of client writes in order, as many
// consecutive write entries with the same stamp: each has its own
// outcome, and a storage failure of any is fatal to the whole entry.
func (sm *StateMachine) applyWrites(a *apply, ws []*kvpb.WriteRequest, now int64) (outcomes []any, err error) {
	outcomes = make([]any, len(ws))
	if a.observed { // room for each write's change at once, not by doubling
		a.changes = slices.Grow(a.changes, len(ws))
	}
	for i, w := range ws {
		if outcomes[i], err = sm.applyWrite(a, w, now); err != nil {
			return nil, err
		}
	}
	return outcomes, nil
}

// applyWrite applies a client write exactly once per session sequence
// number, if the group serves the key's shard at this point of the log.
// Its outcome is a *WriteResult or an error.
//
// Sessions are opened explicitly (WRITE_OP_OPEN_SESSION, which creates the
// record with sequence 0 and is idempotent). A write naming a session the
// shard does not know (never opened, or expired) may be a retry of a
// request applied before the session expired, so it is refused with
// rpcerr.ErrSessionExpired and nothing is applied (Raft dissertation, section
// 6.3: the state machine must not guess that a request is new).
//
// A retry (the session's last sequence number) gets the answer recorded
// the first time: its error, or whether it succeeded and the version
// after it; never a condition evaluated again.
func (sm *StateMachine) applyWrite(a *apply, w *kvpb.WriteRequest, now int64) (outcome any, err error) {
	if !kvpb.KnownWriteOp(w.GetOp()) {
		return fmt.Errorf("%w: unknown write op %d", rpcerr.ErrMalformed, w.GetOp()), nil
	}
	if err := sm.limits.CheckCondition(w); err != nil {
		return err, nil // bad input: nothing recorded
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
			return fmt.Errorf("%w: a session is opened with a client id and sequence 0", rpcerr.ErrMalformed), nil
		}
		if found {
			return nil, nil // a retry, or a session already in use
		}
		return nil, sm.putSessionEntry(a, shard, w.GetClientId(), sessionEntry{lastSeen: now})
	}
	if w.GetClientId() != 0 && w.GetSeq() == 0 {
		return fmt.Errorf("%w: sequence 0 is the session's opening, not a write", rpcerr.ErrMalformed), nil
	}
	if !found && w.GetClientId() != 0 {
		return fmt.Errorf("%w: client %d sequence %d in shard %d", rpcerr.ErrSessionExpired, w.GetClientId(), w.GetSeq(), shard), nil
	}
	if found {
		switch {
		case w.GetSeq() == rec.seq:
			// A retry: the same answer, applied once.
			if err := codeError(rec.errorCode); err != nil {
				return err, nil
			}
			return &WriteResult{Succeeded: !rec.conditionFailed, Version: rec.version}, nil
		case w.GetSeq() < rec.seq:
			return rpcerr.ErrStaleRequest, nil
		}
	}
	res, failed, err := sm.writeData(a, shard, w)
	if err != nil {
		return nil, err
	}
	if w.GetClientId() != 0 {
		rec := sessionEntry{seq: w.GetSeq(), lastSeen: now, errorCode: errorCode(failed)}
		if res != nil {
			rec.version, rec.conditionFailed = res.Version, !res.Succeeded
		}
		if err := sm.putSessionEntry(a, shard, w.GetClientId(), rec); err != nil {
			return nil, err
		}
	}
	if failed != nil {
		return failed, nil
	}
	return res, nil
}

// writeData applies a write to the key's data: its answer, or the
// deterministic failure it records instead (failed), or a storage error.
// The condition is evaluated first: a write whose condition does not hold
// changes nothing and fails nothing (an append it would have made too
// large included).
func (sm *StateMachine) writeData(a *apply, shard int, w *kvpb.WriteRequest) (res *WriteResult, failed, err error) {
	if failed := sm.limits.Check(w.GetOp(), w.GetKey(), w.GetValue()); failed != nil {
		return nil, failed, nil
	}
	sm.dataKeyBuf = sm.appendDataKey(sm.dataKeyBuf[:0], shard, w.GetKey())
	k := sm.dataKeyBuf
	var version uint64
	var value []byte
	if w.IfValue != nil || w.GetOp() == kvpb.WriteOp_WRITE_OP_APPEND || w.GetReturnValue() {
		version, value, err = getValue(a.b, k)
	} else {
		version, err = sm.keyVersion(a, k) // the old value is not needed: not copied
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read key of shard %d: %w", shard, err)
	}
	held := true
	switch {
	case w.IfVersion != nil:
		held = version == w.GetIfVersion()
	case w.IfValue != nil:
		held = version > 0 && bytes.Equal(value, w.GetIfValue())
	}
	if held {
		// A delete of a missing key changes nothing a watcher could see.
		changed := version > 0 || w.GetOp() != kvpb.WriteOp_WRITE_OP_DELETE
		switch w.GetOp() {
		case kvpb.WriteOp_WRITE_OP_PUT:
			version, value = version+1, w.GetValue()
		case kvpb.WriteOp_WRITE_OP_APPEND:
			if n := len(value) + len(w.GetValue()); n > sm.limits.MaxValueSize {
				return nil, fmt.Errorf("%w: append would make %d bytes, limit %d", kvpb.ErrValueTooLarge, n, sm.limits.MaxValueSize), nil
			}
			version, value = version+1, append(value, w.GetValue()...)
		case kvpb.WriteOp_WRITE_OP_DELETE:
			version, value = 0, nil
		default:
			return nil, fmt.Errorf("%w: unknown write op %d", rpcerr.ErrMalformed, w.GetOp()), nil
		}
		if version == 0 {
			err = a.b.Delete(k, nil)
		} else {
			sm.valueBuf = appendValue(sm.valueBuf[:0], version, value)
			err = a.b.Set(k, sm.valueBuf, nil)
		}
		if err != nil {
			return nil, nil, err
		}
		if changed {
			a.observeWrite(shard, w.GetOp(), w.GetKey(), value, version)
		}
	}
	sm.cacheVersion(k, version)
	res = &WriteResult{Succeeded: held, Version: version}
	if w.GetReturnValue() {
		res.Value, res.ValueReturned = value, true
	}
	return res, nil, nil
}

// CheckCondition validates a write's condition against the limits (see
// kvpb.CheckCondition).
func (l Limits) CheckCondition(w *kvpb.WriteRequest) error {
	return kvpb.CheckCondition(w, l.withDefaults().MaxValueSize)
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

// Get reads key's value and version from the applied state, if the group
// serves its shard; version 0 (and a nil value) when the key does not
// exist. For a linearizable read, confirm a read index first.
func (sm *StateMachine) Get(key []byte) (value []byte, version uint64, err error) {
	value, version, _, err = sm.get(key)
	return value, version, err
}

// KeyVersion reads key's version (0: it does not exist) and the applied
// index it is the version at, if the group serves its shard: where a watch
// from a version of the key starts (package group/watch). An observer has
// heard of every change up to that index.
func (sm *StateMachine) KeyVersion(key []byte) (version, applied uint64, err error) {
	_, version, applied, err = sm.get(key)
	return version, applied, err
}

func (sm *StateMachine) get(key []byte) (value []byte, version, applied uint64, err error) {
	if err := sm.limits.Check(kvpb.WriteOp_WRITE_OP_DELETE, key, nil); err != nil {
		return nil, 0, 0, err
	}
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	shard := sm.shardOf(key)
	if err := sm.ownership(shard); err != nil {
		return nil, 0, 0, err
	}
	version, value, err = getValue(sm.db, sm.dataKey(shard, key))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read key of shard %d: %w", shard, err)
	}
	return value, version, sm.applied, nil
}
