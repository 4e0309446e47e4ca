package group

import (
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/storage"
)

// sessionCache holds the session records that writes read and wrote since
// the last command of another kind. Every write reads its session's
// record; without it that was a read through Pebble (issue 16's profile:
// 7% of a put's CPU). It is emptied around every command other than a
// write, around the expiry sweep and on Restore, so it only ever mirrors
// records that plain writes wrote or read: nothing else can change them
// in between. Apply holds sm.mu.
type sessionCache map[sessionKey]sessionEntry

type sessionKey struct {
	shard  int
	client uint64
}

// sessionEntry is a record's fields (grouppb.SessionRecord's, but for
// the client id), by value: the write path reads and writes records
// without allocating a message for each.
type sessionEntry struct {
	seq             uint64
	lastSeen        int64
	errorCode       uint32
	version         uint64
	conditionFailed bool
}

func entryOf(rec *grouppb.SessionRecord) sessionEntry {
	return sessionEntry{seq: rec.GetSeq(), lastSeen: rec.GetLastSeen(), errorCode: rec.GetErrorCode(),
		version: rec.GetVersion(), conditionFailed: rec.GetConditionFailed()}
}

// session returns client's record in shard, and whether there is one.
func (sm *StateMachine) session(a *apply, shard int, client uint64) (sessionEntry, bool, error) {
	if client == 0 {
		return sessionEntry{}, false, nil
	}
	if e, ok := sm.sessions[sessionKey{shard, client}]; ok {
		return e, true, nil
	}
	sm.sessionKeyBuf = sm.appendSessionKey(sm.sessionKeyBuf[:0], shard, client)
	v, ok, err := storage.Get(a.b, sm.sessionKeyBuf)
	if err != nil || !ok {
		return sessionEntry{}, false, err
	}
	rec := &grouppb.SessionRecord{}
	if err := proto.Unmarshal(v, rec); err != nil {
		return sessionEntry{}, false, err
	}
	sm.cacheSession(shard, rec.GetClientId(), entryOf(rec))
	return entryOf(rec), true, nil
}

// putSession stores rec as it is (a record from another group or a
// backup, unknown fields included).
func (sm *StateMachine) putSession(a *apply, shard int, rec *grouppb.SessionRecord) error {
	if err := storage.SetProto(a.b, sm.sessionKey(shard, rec.GetClientId()), rec); err != nil {
		return err
	}
	sm.cacheSession(shard, rec.GetClientId(), entryOf(rec))
	return nil
}

// putSessionEntry stores client's record e in shard: the encoding of
// the grouppb.SessionRecord with e's fields, built in reused buffers.
func (sm *StateMachine) putSessionEntry(a *apply, shard int, client uint64, e sessionEntry) error {
	rec := &sm.sessionBuf
	rec.ClientId, rec.Seq, rec.LastSeen, rec.ErrorCode, rec.Version, rec.ConditionFailed =
		client, e.seq, e.lastSeen, e.errorCode, e.version, e.conditionFailed
	v, err := proto.MarshalOptions{}.MarshalAppend(sm.valueBuf[:0], rec)
	if err != nil {
		return err
	}
	sm.valueBuf = v
	sm.sessionKeyBuf = sm.appendSessionKey(sm.sessionKeyBuf[:0], shard, client)
	if err := a.b.Set(sm.sessionKeyBuf, v, nil); err != nil {
		return err
	}
	sm.cacheSession(shard, client, e)
	return nil
}

func (sm *StateMachine) cacheSession(shard int, client uint64, e sessionEntry) {
	if sm.sessions == nil {
		sm.sessions = sessionCache{}
	}
	sm.sessions[sessionKey{shard, client}] = e
}

// forgetSessions empties the session cache (see sessionCache).
func (sm *StateMachine) forgetSessions() { sm.sessions = nil }

// mergeSession keeps, per client, the record with the higher sequence
// number: a shard arriving from another group may know a client's newer
// request, or an older one.
func (sm *StateMachine) mergeSession(a *apply, shard int, rec *grouppb.SessionRecord) error {
	old, ok, err := sm.session(a, shard, rec.GetClientId())
	if err != nil {
		return err
	}
	if ok && old.seq >= rec.GetSeq() {
		return nil
	}
	return sm.putSession(a, shard, rec)
}

// expireSessions forgets sessions idle for longer than the TTL, by
// replicated time (now). It sweeps at most once per eighth of the TTL, and only
// shards the group serves: a shard on its way out stays exactly as it was
// when it was offered.
func (sm *StateMachine) expireSessions(a *apply, now int64) error {
	ttl := sm.limits.SessionTTL.Milliseconds()
	if now < sm.meta.nextExpiry || ttl <= 0 {
		return nil
	}
	sm.meta.nextExpiry = now + max(ttl/8, 1)
	a.metaChanged = true
	cutoff := now - ttl
	for shard, m := range sm.meta.shards {
		if !m.state.servable() {
			continue
		}
		_, _, lo, hi := sm.shardSpans(shard)
		it, err := a.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return err
		}
		var expired [][]byte
		for it.First(); it.Valid(); it.Next() {
			var rec grouppb.SessionRecord
			if err := proto.Unmarshal(it.Value(), &rec); err != nil {
				it.Close()
				return err
			}
			if rec.GetLastSeen() < cutoff {
				expired = append(expired, append([]byte(nil), it.Key()...))
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
		for _, k := range expired {
			if err := a.b.Delete(k, nil); err != nil {
				return err
			}
		}
	}
	sm.forgetSessions()
	return nil
}
