package group

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// Backups and restores (see docs/design.md, "Backup and restore").
//
// A backup reads shards; it changes nothing. ExportForBackup takes one
// Pebble snapshot of the replica's applied state, under the same lock
// Apply holds, after checking that the group is at the backup's
// configuration and serves every shard asked for: the shards are exact as
// of one applied index. Called after a ReadIndex, that index is a
// linearizable point of the group.
//
// A restore loads a shard from a backup through the log, in chunks, as a
// pull does: restore entries. Chunk 0 carries no data and starts the
// load; it is applied only to a shard the group serves at the entry's
// configuration and that is empty (no key, no session), or to one whose
// load already started (a restore restarted: it clears the partial load).
// The shard is then Restoring: not served, and the group installs no
// further configuration. Chunks 1, 2, ... follow in order; the last one
// makes the shard Serving. So a restore never overwrites data, and a
// shard half loaded is never served.

// restoreShard applies one chunk of a shard loaded from a backup.
func (sm *StateMachine) restoreShard(a *apply, in *grouppb.InsertShard, now int64) (outcome, err error) {
	shard := int(in.GetShard())
	if in.GetConfigNum() != sm.meta.config.Num || shard >= len(sm.meta.shards) {
		return fmt.Errorf("%w: shard %d is not restored at configuration %d (the group is at %d)",
			kvpb.ErrStaleConfig, shard, in.GetConfigNum(), sm.meta.config.Num), nil
	}
	m := &sm.meta.shards[shard]
	// Checked whole before anything changes, as insertShard.
	switch {
	case in.GetChunk() == 0 && (len(in.GetKvs()) > 0 || len(in.GetSessions()) > 0 || in.GetLast()):
		return fmt.Errorf("%w: chunk 0 of a restore carries data", rpcerr.ErrMalformed), nil
	case in.GetChunk() == 0 && m.state == Serving:
		dl, dh, sl, sh := sm.shardSpans(shard)
		for _, span := range [][2][]byte{{dl, dh}, {sl, sh}} {
			empty, err := spanEmpty(a.b, span[0], span[1])
			if err != nil {
				return nil, err
			}
			if !empty {
				return fmt.Errorf("%w: shard %d has data or sessions at configuration %d; a restore only fills empty shards",
					ErrNotEmpty, shard, sm.meta.config.Num), nil
			}
		}
	case in.GetChunk() == 0 && m.state == Restoring:
	case in.GetChunk() == 0:
		return fmt.Errorf("%w: shard %d is %s here at configuration %d", kvpb.ErrWrongGroup, shard, m.state, sm.meta.config.Num), nil
	case m.state != Restoring || in.GetChunk() != m.nextChunk:
		return fmt.Errorf("%w: restore chunk %d of shard %d, which is %s (next chunk %d)",
			kvpb.ErrStaleConfig, in.GetChunk(), shard, m.state, m.nextChunk), nil
	}
	for _, kv := range in.GetKvs() {
		if controller.ShardOf(kv.GetKey(), len(sm.meta.shards)) != shard {
			return fmt.Errorf("%w: key of another shard in shard %d", rpcerr.ErrMalformed, shard), nil
		}
	}
	if in.GetChunk() == 0 {
		if err := sm.dropShard(a, shard); err != nil { // a partial load
			return nil, err
		}
		*m = shardMeta{state: Restoring}
	}
	for _, kv := range in.GetKvs() {
		if err := sm.setKeyValue(a.b, shard, kv); err != nil {
			return nil, err
		}
	}
	for _, rec := range in.GetSessions() {
		rec.LastSeen = now // as insertShard: this cluster's replicated time
		if err := sm.mergeSession(a, shard, rec); err != nil {
			return nil, err
		}
	}
	m.nextChunk++
	if in.GetLast() {
		*m = shardMeta{state: Serving}
	}
	a.metaChanged = true
	return nil, nil
}

// spanEmpty reports whether r has no key in [lo, hi).
func spanEmpty(r pebble.Reader, lo, hi []byte) (bool, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return false, err
	}
	empty := !it.First()
	if err := it.Error(); err != nil {
		it.Close()
		return false, err
	}
	return empty, it.Close()
}

// RestoreProgress returns shard's state and, while it is Restoring, the
// number of the next restore chunk it accepts.
func (sm *StateMachine) RestoreProgress(shard int) (ShardState, uint64) {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	if shard < 0 || shard >= len(sm.meta.shards) {
		return Absent, 0
	}
	m := sm.meta.shards[shard]
	if m.state != Restoring {
		return m.state, 0
	}
	return m.state, m.nextChunk
}

// BackupExport is a consistent, read-only view of some shards of the
// group, all as of one applied index.
type BackupExport struct {
	snap    *pebble.Snapshot
	applied uint64
	shards  []*ShardExport // in the order asked
}

// ExportForBackup returns shards, as of now, for a backup of the cluster at
// configuration num. It fails with kvpb.ErrNotReady while the group is
// below num or some shard asked for is not served yet (Pulling, Restoring),
// with kvpb.ErrStaleConfig once the group has passed num, and with
// kvpb.ErrWrongGroup for a shard the group does not own at num. Confirming
// shards are exported: their data is here whole and they serve.
func (sm *StateMachine) ExportForBackup(num uint64, shards []int) (*BackupExport, error) {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	cur := sm.meta.config.Num
	switch {
	case cur < num:
		return nil, fmt.Errorf("%w: the group is at configuration %d, the backup at %d", kvpb.ErrNotReady, cur, num)
	case cur > num:
		return nil, fmt.Errorf("%w: the group is at configuration %d, past the backup's %d", kvpb.ErrStaleConfig, cur, num)
	}
	for _, s := range shards {
		if s < 0 || s >= len(sm.meta.shards) || sm.meta.config.Shards[s] != sm.gid {
			return nil, fmt.Errorf("%w: shard %d is not this group's at configuration %d", kvpb.ErrWrongGroup, s, num)
		}
		if st := sm.meta.shards[s].state; !st.servable() {
			return nil, fmt.Errorf("%w: shard %d is %s at configuration %d", kvpb.ErrNotReady, s, st, num)
		}
	}
	x := &BackupExport{snap: sm.db.NewSnapshot(), applied: sm.applied}
	for _, s := range shards {
		dl, dh, sl, sh := sm.shardSpans(s)
		x.shards = append(x.shards, &ShardExport{snap: x.snap, dataLo: dl, dataHi: dh, sessLo: sl, sessHi: sh, prefixLen: len(dl)})
	}
	return x, nil
}

// Applied is the applied index the export reflects.
func (x *BackupExport) Applied() uint64 { return x.applied }

// Chunks calls fn with successive chunks of the i-th shard asked for, as
// ShardExport.Chunks.
func (x *BackupExport) Chunks(i, maxBytes int, fn func(*grouppb.ShardChunk) error) error {
	return x.shards[i].Chunks(maxBytes, fn)
}

// Close releases the export's snapshot.
func (x *BackupExport) Close() error { return x.snap.Close() }
