package group

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// blocked reports whether some shard of the current configuration is still
// moving in or out, so that next cannot be installed yet. A Held shard that
// next gives back to this group does not block: its data never left.
func (sm *StateMachine) blocked(next controller.Config) bool {
	for s, m := range sm.meta.shards {
		switch {
		case m.state == Serving || m.state == Absent:
		case m.state == Held && s < len(next.Shards) && next.Shards[s] == sm.gid:
		default:
			return true
		}
	}
	return false
}

// CanInstall reports whether next would be installed now: it follows the
// current configuration, and every migration is finished or is a Held
// shard next gives back.
//
// A configuration the state machine would refuse at apply time as another
// incarnation's (it records another copy of this group's id for shards the
// group owns, which a controller never does) counts as installable: its
// proposal's outcome says why the group stops there.
func (sm *StateMachine) CanInstall(next controller.Config) bool {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	own, err := sm.ownConfig(next)
	return next.Num == sm.meta.config.Num+1 && (err != nil || !sm.blocked(own))
}

// installConfig moves the group from configuration N to next (N+1): only
// in order, and only once every migration of N is finished (or is a Held
// shard that next gives back). A configuration recording another
// incarnation of the group's id is installed without the id (ownConfig).
func (sm *StateMachine) installConfig(a *apply, next controller.Config) (outcome, err error) {
	cur := sm.meta.config
	next, outcome = sm.ownConfig(next)
	switch {
	case outcome != nil:
		return outcome, nil
	case next.Num != cur.Num+1:
		return fmt.Errorf("%w: have %d, offered %d", kvpb.ErrStaleConfig, cur.Num, next.Num), nil
	case sm.blocked(next):
		return fmt.Errorf("%w: configuration %d still migrating", kvpb.ErrNotReady, cur.Num), nil
	case len(next.Shards) == 0 || (len(sm.meta.shards) > 0 && len(next.Shards) != len(sm.meta.shards)):
		return fmt.Errorf("%w: configuration %d has %d shards", rpcerr.ErrMalformed, next.Num, len(next.Shards)), nil
	}
	if len(sm.meta.shards) == 0 {
		sm.meta.shards = make([]shardMeta, len(next.Shards))
		cur.Shards = make([]uint64, len(next.Shards)) // configuration 0: no owners
	}
	for s := range next.Shards {
		if cur.Shards[s] == sm.gid && next.Shards[s] == sm.gid && sm.meta.shards[s].state == Absent {
			// Given up at N (abandonPull) because its old owner took it
			// back, which only a configuration giving it to that owner
			// allows: never this one.
			return fmt.Errorf("%w: configuration %d gives this group shard %d, given up at %d", rpcerr.ErrMalformed, next.Num, s, cur.Num), nil
		}
	}
	for s := range next.Shards {
		was, now := cur.Shards[s] == sm.gid, next.Shards[s] == sm.gid
		switch st := sm.meta.shards[s].state; {
		case st == Held:
			// Given back (not blocked) before any data left: the frozen
			// copy here is the shard, and nobody else served it.
			sm.meta.shards[s] = shardMeta{state: Serving}
		case was && st == Absent:
			// Given up at N: there is nothing here to offer.
		case now && !was && cur.Shards[s] == 0:
			sm.meta.shards[s] = shardMeta{state: Serving} // from nowhere: starts empty
		case now && !was:
			sm.meta.shards[s] = shardMeta{state: Pulling}
		case was && !now && next.Shards[s] == 0:
			// Every group left (a forced leave): nobody will pull it.
			if err := sm.dropShard(a, s); err != nil {
				return nil, err
			}
			sm.meta.shards[s] = shardMeta{state: Absent}
		case was && !now:
			sm.meta.shards[s] = shardMeta{state: Held}
		}
	}
	sm.meta.prev, sm.meta.config = cur, next
	a.metaChanged = true
	return nil, nil
}

// handOver records, before any data of shard leaves for its new owner at
// configuration num, that it may have: Held becomes Offering, and the shard
// can no longer be given back without the new owner.
func (sm *StateMachine) handOver(a *apply, num uint64, shard int) error {
	cur := sm.meta.config.Num
	switch {
	case num > cur:
		return fmt.Errorf("%w: at configuration %d, asked for shard %d at %d", kvpb.ErrNotReady, cur, shard, num)
	case num < cur || shard < 0 || shard >= len(sm.meta.shards):
		return fmt.Errorf("%w: shard %d is not offered at configuration %d", kvpb.ErrStaleConfig, shard, num)
	}
	switch m := &sm.meta.shards[shard]; m.state {
	case Offering:
		return nil
	case Held:
		m.state = Offering
		a.metaChanged = true
		return nil
	}
	return fmt.Errorf("%w: shard %d is not offered at configuration %d", kvpb.ErrStaleConfig, shard, num)
}

// abandonPull gives up pulling shard at configuration num: its old owner
// answered the pull as past num, which, while the shard is still Pulling
// here, means it took the shard back (a configuration gave it back before
// any data left; see handOver). Nothing of it was served here. The shard
// becomes Absent, and any partial copy is dropped.
func (sm *StateMachine) abandonPull(a *apply, num uint64, shard int) error {
	if num != sm.meta.config.Num || shard < 0 || shard >= len(sm.meta.shards) || sm.meta.shards[shard].state != Pulling {
		return nil
	}
	if err := sm.dropShard(a, shard); err != nil {
		return err
	}
	sm.meta.shards[shard] = shardMeta{state: Absent}
	a.metaChanged = true
	return nil
}

// insertShard applies one chunk of a shard pulled from its previous owner.
func (sm *StateMachine) insertShard(a *apply, in *grouppb.InsertShard, now int64) (outcome, err error) {
	shard := int(in.GetShard())
	if in.GetConfigNum() != sm.meta.config.Num || shard >= len(sm.meta.shards) || sm.meta.shards[shard].state != Pulling {
		return fmt.Errorf("%w: shard %d at configuration %d is not awaited", kvpb.ErrStaleConfig, shard, in.GetConfigNum()), nil
	}
	m := &sm.meta.shards[shard]
	// A chunk is checked whole before anything changes: a refused chunk
	// leaves no trace (an early return after a change would have left the
	// change in the batch, and one to the metadata in memory only).
	if in.GetChunk() != 0 && in.GetChunk() != m.nextChunk {
		return fmt.Errorf("%w: chunk %d of shard %d, expected %d", kvpb.ErrStaleConfig, in.GetChunk(), shard, m.nextChunk), nil
	}
	for _, kv := range in.GetKvs() {
		if controller.ShardOf(kv.GetKey(), len(sm.meta.shards)) != shard {
			return fmt.Errorf("%w: key of another shard in shard %d", rpcerr.ErrMalformed, shard), nil
		}
	}
	if in.GetChunk() == 0 {
		if err := sm.dropShard(a, shard); err != nil { // a partial copy from an earlier pull
			return nil, err
		}
		m.nextChunk = 0
	}
	for _, kv := range in.GetKvs() {
		if err := sm.setKeyValue(a.b, shard, kv); err != nil {
			return nil, err
		}
	}
	for _, rec := range in.GetSessions() {
		// Each group keeps its own replicated time: a session arriving
		// from another group is counted as seen now, so it lives at least
		// its TTL here too (keeping it longer is always safe).
		rec.LastSeen = now
		if err := sm.mergeSession(a, shard, rec); err != nil {
			return nil, err
		}
	}
	m.nextChunk++
	if in.GetLast() {
		m.state = Confirming
	}
	a.metaChanged = true
	return nil, nil
}

// deleteShard drops a shard the new owner has committed. A request for a
// configuration already passed, or a shard already dropped, succeeds: the
// deletion happened.
func (sm *StateMachine) deleteShard(a *apply, num uint64, shard int) (outcome, err error) {
	cur := sm.meta.config.Num
	switch {
	case num > cur:
		return fmt.Errorf("%w: at configuration %d, asked to delete at %d", kvpb.ErrNotReady, cur, num), nil
	case num < cur || shard >= len(sm.meta.shards) || sm.meta.shards[shard].state != Offering:
		return nil, nil
	}
	if err := sm.dropShard(a, shard); err != nil {
		return nil, err
	}
	sm.meta.shards[shard] = shardMeta{state: Absent}
	a.metaChanged = true
	return nil, nil
}

// confirmDelete records that the old owner deleted its copy.
func (sm *StateMachine) confirmDelete(a *apply, num uint64, shard int) error {
	if num != sm.meta.config.Num || shard >= len(sm.meta.shards) || sm.meta.shards[shard].state != Confirming {
		return nil
	}
	sm.meta.shards[shard].state = Serving
	a.metaChanged = true
	return nil
}

// ShardExport is a consistent, read-only view of one offered shard.
type ShardExport struct {
	snap           *pebble.Snapshot
	dataLo, dataHi []byte
	sessLo, sessHi []byte
	prefixLen      int
}

// HandedOver reports whether the group offers shard at configuration num
// and has recorded its handover (Offering): its data may be exported.
func (sm *StateMachine) HandedOver(num uint64, shard int) bool {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.meta.config.Num == num && shard >= 0 && shard < len(sm.meta.shards) && sm.meta.shards[shard].state == Offering
}

// ExportShard returns the shard this group offers at configuration num, as
// of now. It fails with kvpb.ErrNotReady while the group has not reached num or
// has not recorded the handover (a HandOver command), and kvpb.ErrStaleConfig
// when it has passed num or does not offer the shard.
func (sm *StateMachine) ExportShard(num uint64, shard int) (*ShardExport, error) {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	cur := sm.meta.config.Num
	switch {
	case cur < num:
		return nil, fmt.Errorf("%w: at configuration %d, asked for shard %d at %d", kvpb.ErrNotReady, cur, shard, num)
	case cur == num && shard >= 0 && shard < len(sm.meta.shards) && sm.meta.shards[shard].state == Held:
		return nil, fmt.Errorf("%w: shard %d is not handed over yet", kvpb.ErrNotReady, shard)
	case cur > num || shard < 0 || shard >= len(sm.meta.shards) || sm.meta.shards[shard].state != Offering:
		return nil, fmt.Errorf("%w: shard %d is not offered at configuration %d", kvpb.ErrStaleConfig, shard, num)
	}
	dl, dh, sl, sh := sm.shardSpans(shard)
	return &ShardExport{snap: sm.db.NewSnapshot(), dataLo: dl, dataHi: dh, sessLo: sl, sessHi: sh, prefixLen: len(dl)}, nil
}

// Chunks calls fn with successive chunks of at most about maxBytes of data;
// the last chunk carries the shard's sessions.
func (x *ShardExport) Chunks(maxBytes int, fn func(*grouppb.ShardChunk) error) error {
	it, err := x.snap.NewIter(&pebble.IterOptions{LowerBound: x.dataLo, UpperBound: x.dataHi})
	if err != nil {
		return err
	}
	defer it.Close()
	chunk, size := &grouppb.ShardChunk{}, 0
	for it.First(); it.Valid(); it.Next() {
		kv, err := keyValue(it.Key()[x.prefixLen:], it.Value())
		if err != nil {
			return err
		}
		chunk.Kvs = append(chunk.Kvs, kv)
		size += len(kv.Key) + len(kv.Value)
		if size >= maxBytes {
			if err := fn(chunk); err != nil {
				return err
			}
			chunk, size = &grouppb.ShardChunk{}, 0
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	sit, err := x.snap.NewIter(&pebble.IterOptions{LowerBound: x.sessLo, UpperBound: x.sessHi})
	if err != nil {
		return err
	}
	defer sit.Close()
	for sit.First(); sit.Valid(); sit.Next() {
		rec := &grouppb.SessionRecord{}
		if err := proto.Unmarshal(sit.Value(), rec); err != nil {
			return err
		}
		chunk.Sessions = append(chunk.Sessions, rec)
	}
	if err := sit.Error(); err != nil {
		return err
	}
	chunk.Last = true
	return fn(chunk)
}

// Close releases the export's snapshot.
func (x *ShardExport) Close() error { return x.snap.Close() }
