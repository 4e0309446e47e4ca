package group

import (
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/storage"
)

func (sm *StateMachine) session(a *apply, shard int, client uint64) (*grouppb.SessionRecord, bool, error) {
	if client == 0 {
		return nil, false, nil
	}
	v, ok, err := storage.Get(a.b, sm.sessionKey(shard, client))
	if err != nil || !ok {
		return nil, false, err
	}
	rec := &grouppb.SessionRecord{}
	if err := proto.Unmarshal(v, rec); err != nil {
		return nil, false, err
	}
	return rec, true, nil
}

func (sm *StateMachine) putSession(a *apply, shard int, rec *grouppb.SessionRecord) error {
	v, err := proto.Marshal(rec)
	if err != nil {
		return err
	}
	return a.b.Set(sm.sessionKey(shard, rec.GetClientId()), v, nil)
}

// mergeSession keeps, per client, the record with the higher sequence
// number: a shard arriving from another group may know a client's newer
// request, or an older one.
func (sm *StateMachine) mergeSession(a *apply, shard int, rec *grouppb.SessionRecord) error {
	old, ok, err := sm.session(a, shard, rec.GetClientId())
	if err != nil {
		return err
	}
	if ok && old.GetSeq() >= rec.GetSeq() {
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
	return nil
}
