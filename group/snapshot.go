package group

import (
	"fmt"
	"hash/fnv"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/storage"
)

// Snapshot implements raftnode.StateMachine: the whole replica state, for a
// follower too far behind to catch up from the log.
func (sm *StateMachine) Snapshot() ([]byte, error) {
	sm.mu.RLock()
	snap := sm.db.NewSnapshot()
	img := &grouppb.Image{Applied: sm.applied, Meta: sm.meta.toProto(), Now: sm.now}
	numShards := len(sm.meta.shards)
	sm.mu.RUnlock()
	defer snap.Close()
	for shard := 0; shard < numShards; shard++ {
		dl, dh, sl, sh := sm.shardSpans(shard)
		is := &grouppb.ImageShard{Shard: uint32(shard)}
		if err := storage.Scan(snap, dl, dh, func(k, v []byte) error {
			kv, err := keyValue(k[len(dl):], v)
			is.Kvs = append(is.Kvs, kv)
			return err
		}); err != nil {
			return nil, err
		}
		if err := storage.Scan(snap, sl, sh, func(_, v []byte) error {
			rec := &grouppb.SessionRecord{}
			if err := proto.Unmarshal(v, rec); err != nil {
				return err
			}
			is.Sessions = append(is.Sessions, rec)
			return nil
		}); err != nil {
			return nil, err
		}
		if len(is.Kvs) > 0 || len(is.Sessions) > 0 {
			img.Shards = append(img.Shards, is)
		}
	}
	return proto.Marshal(img)
}

// Restore implements raftnode.StateMachine.
func (sm *StateMachine) Restore(image []byte) error {
	var img grouppb.Image
	if err := proto.Unmarshal(image, &img); err != nil {
		return fmt.Errorf("decode group image: %w", err)
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if err := sm.r.ReplaceState(sm.e, storage.Progress{Applied: img.GetApplied(), Now: img.GetNow()}, func(b *pebble.Batch) error {
		for _, is := range img.GetShards() {
			shard := int(is.GetShard())
			for _, kv := range is.GetKvs() {
				if err := sm.setKeyValue(b, shard, kv); err != nil {
					return err
				}
			}
			for _, rec := range is.GetSessions() {
				if err := storage.SetProto(b, sm.sessionKey(shard, rec.GetClientId()), rec); err != nil {
					return err
				}
			}
		}
		return storage.SetProto(b, sm.r.StateKey(keyMeta), img.GetMeta())
	}); err != nil {
		return err
	}
	sm.applied = img.GetApplied()
	sm.now = img.GetNow()
	sm.meta = metaFromProto(img.GetMeta())
	sm.configNum.Store(sm.meta.config.Num)
	sm.forgetSessions()
	sm.forgetVersions()
	if sm.observer != nil {
		sm.observer.Restored(sm.applied, sm.shardStates())
	}
	return nil
}

// ShardView describes one shard of a View.
type ShardView struct {
	State ShardState
	// Peer is the group the shard comes from (Pulling, Confirming) or goes
	// to (Held, Offering); 0 otherwise.
	Peer uint64
}

// View is a copy of the group's current view, for drivers and status.
type View struct {
	Config, Prev controller.Config
	Shards       []ShardView
}

// View returns the group's applied view.
func (sm *StateMachine) View() View {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	v := View{Config: sm.meta.config.Clone(), Prev: sm.meta.prev.Clone(), Shards: make([]ShardView, len(sm.meta.shards))}
	for s, m := range sm.meta.shards {
		v.Shards[s].State = m.state
		switch m.state {
		case Pulling, Confirming:
			v.Shards[s].Peer = sm.meta.prev.Shards[s]
		case Offering, Held:
			v.Shards[s].Peer = sm.meta.config.Shards[s]
		}
	}
	return v
}

// ConfigNum returns the number of the configuration the replica is at.
func (sm *StateMachine) ConfigNum() uint64 { return sm.configNum.Load() }

// Digests returns, as of one applied index, a hash of every shard's data
// and duplicate table (FNV-1a over keys and values in key order). Replicas
// that applied the same index must report the same digests.
func (sm *StateMachine) Digests() (applied uint64, digests []uint64, err error) {
	sm.mu.RLock()
	snap := sm.db.NewSnapshot()
	applied, n := sm.applied, len(sm.meta.shards)
	sm.mu.RUnlock()
	defer snap.Close()
	digests = make([]uint64, n)
	for shard := 0; shard < n; shard++ {
		h := fnv.New64a()
		dl, dh, sl, sh := sm.shardSpans(shard)
		for _, span := range [][2][]byte{{dl, dh}, {sl, sh}} {
			if err := storage.Scan(snap, span[0], span[1], func(k, v []byte) error {
				_, _ = h.Write(k[len(span[0]):]) // without the replica's own key prefix
				_, _ = h.Write(v)
				return nil
			}); err != nil {
				return 0, nil, err
			}
		}
		digests[shard] = h.Sum64()
	}
	return applied, digests, nil
}
