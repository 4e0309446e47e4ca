package group

import (
	"bytes"
	"container/heap"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/api/kvpb"
)

// Listing (see docs/design.md, "Listing"). A listing reads the shards it
// names as of one applied index: under the lock Apply holds, it checks
// that the group serves every one of them and takes one Pebble snapshot,
// then scans each shard's data span from it, merging the shards by key.
// Called after a ReadIndex, that index is a linearizable point of the
// group. It changes nothing.

// List returns the keys of the shards req names that lie in [start, end)
// and after its cursor, in byte order, with their values and versions
// (unless keys_only: then neither is read), at most req.Limit keys (0: no
// count limit) and about req.MaxBytes of keys and values (0 or above
// kvpb.MaxListBytes: that). more is true when it stopped at a bound with
// keys still to come. It fails with rpcerr.ErrMalformed or
// kvpb.ErrKeyTooLarge for a bad request, and for a shard the group does
// not serve now with kvpb.ErrWrongGroup (not its shard) or
// kvpb.ErrNotReady (arriving, or being restored), returning nothing.
func (sm *StateMachine) List(req *kvpb.ListRequest) (kvs []*kvpb.KeyValue, more bool, err error) {
	snap, err := sm.listSnapshot(req)
	if err != nil {
		return nil, false, err
	}
	defer snap.Close()
	from, end := kvpb.ListFrom(req), req.GetEnd()
	if len(end) > 0 && bytes.Compare(from, end) >= 0 {
		return nil, false, nil
	}
	m := make(shardMerge, 0, len(req.GetShards()))
	defer m.close()
	for _, s := range req.GetShards() {
		lo, hi, _, _ := sm.shardSpans(int(s))
		prefixLen := len(lo)
		lo = sm.dataKey(int(s), from)
		if len(end) > 0 {
			hi = sm.dataKey(int(s), end)
		}
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return nil, false, err
		}
		c := &shardCursor{it: it, prefixLen: prefixLen}
		m = append(m, c)
		if !it.First() {
			if err := it.Error(); err != nil {
				return nil, false, err
			}
			m = m[:len(m)-1]
			_ = it.Close()
		}
	}
	heap.Init(&m)
	limit, maxBytes := int(req.GetLimit()), int(req.GetMaxBytes())
	if maxBytes <= 0 || maxBytes > kvpb.MaxListBytes {
		maxBytes = kvpb.MaxListBytes
	}
	size := 0
	for len(m) > 0 {
		if (limit > 0 && len(kvs) == limit) || size >= maxBytes {
			return kvs, true, nil
		}
		c := m[0]
		kv := &kvpb.KeyValue{Key: slices.Clone(c.key())}
		if !req.GetKeysOnly() {
			stored, err := c.it.ValueAndErr()
			if err != nil {
				return nil, false, err
			}
			version, value, err := decodeValue(stored)
			if err != nil {
				return nil, false, fmt.Errorf("key %q: %w", kv.Key, err)
			}
			kv.Value, kv.Version = slices.Clone(value), version
		}
		kvs = append(kvs, kv)
		size += len(kv.Key) + len(kv.Value)
		if c.it.Next() {
			heap.Fix(&m, 0)
			continue
		}
		if err := c.it.Error(); err != nil {
			return nil, false, err
		}
		heap.Pop(&m)
		_ = c.it.Close()
	}
	return kvs, false, nil
}

// listSnapshot checks req and that the group serves every shard it names,
// and returns a snapshot of the replica's state as of now.
func (sm *StateMachine) listSnapshot(req *kvpb.ListRequest) (*pebble.Snapshot, error) {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	if len(sm.meta.shards) == 0 {
		return nil, fmt.Errorf("%w: no configuration applied yet", kvpb.ErrWrongGroup)
	}
	if err := kvpb.CheckList(req, len(sm.meta.shards), sm.limits.MaxKeySize); err != nil {
		return nil, err
	}
	for _, s := range req.GetShards() {
		if err := sm.ownership(int(s)); err != nil {
			return nil, err
		}
	}
	return sm.db.NewSnapshot(), nil
}

// shardCursor is one shard's iterator in a listing; its keys carry the
// shard's data prefix (prefixLen bytes).
type shardCursor struct {
	it        *pebble.Iterator
	prefixLen int
}

func (c *shardCursor) key() []byte { return c.it.Key()[c.prefixLen:] }

// shardMerge is a min-heap of positioned shard cursors by their current
// key: the shards are disjoint, so no two cursors are at the same key.
type shardMerge []*shardCursor

func (m shardMerge) Len() int           { return len(m) }
func (m shardMerge) Less(i, j int) bool { return bytes.Compare(m[i].key(), m[j].key()) < 0 }
func (m shardMerge) Swap(i, j int)      { m[i], m[j] = m[j], m[i] }
func (m *shardMerge) Push(x any)        { *m = append(*m, x.(*shardCursor)) }
func (m *shardMerge) Pop() any {
	old := *m
	c := old[len(old)-1]
	*m = old[:len(old)-1]
	return c
}

// close closes the cursors still in the heap.
func (m *shardMerge) close() {
	for _, c := range *m {
		_ = c.it.Close()
	}
}

// CheckList validates a listing against the limits, before its read index
// (see kvpb.CheckList); List checks it again with the shard count.
func (l Limits) CheckList(req *kvpb.ListRequest) error {
	return kvpb.CheckList(req, 0, l.withDefaults().MaxKeySize)
}
