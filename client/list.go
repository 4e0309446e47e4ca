package client

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/shardkv/shardkv/api/kvpb"
)

// DefaultListLimit is the number of keys of a page when List is given no
// WithLimit.
const DefaultListLimit = 1000

// KeyValue is one key of a listing.
type KeyValue struct {
	Key []byte
	// Value is the key's value; nil with WithKeysOnly.
	Value []byte
	// Version is the key's version (1 at creation, +1 per put or append);
	// 0 with WithKeysOnly.
	Version uint64
}

// ListResult is one page of a listing.
type ListResult struct {
	// KVs are the page's keys, in byte order.
	KVs []KeyValue
	// More is whether keys of the range may follow Next: list the next
	// page with After(Next). False: the page held every key of the range
	// after its cursor.
	More bool
	// Next is the page's cursor, its last key (nil for an empty page).
	Next []byte
}

type listOptions struct {
	start, end, after []byte
	limit             uint32
	keysOnly          bool
}

// ListOption selects what List returns.
type ListOption func(*listOptions)

// WithPrefix lists the keys that start with prefix (every key when it is
// empty). WithPrefix and WithRange set the same range: the last given
// counts.
func WithPrefix(prefix []byte) ListOption {
	return func(o *listOptions) { o.start, o.end = prefix, kvpb.PrefixEnd(prefix) }
}

// WithRange lists the keys in [start, end), in byte order; an empty end
// means no end. Without WithRange or WithPrefix, List lists every key.
func WithRange(start, end []byte) ListOption {
	return func(o *listOptions) { o.start, o.end = start, end }
}

// WithLimit bounds a page to n keys (DefaultListLimit without it; 0: no
// count limit). A page may hold fewer, with More set: each group's part
// of it is also bounded to 4 MiB of keys and values (kvpb.MaxListBytes).
func WithLimit(n int) ListOption {
	return func(o *listOptions) { o.limit = uint32(max(n, 0)) }
}

// WithKeysOnly lists keys without their values and versions: the servers
// neither read nor send the values.
func WithKeysOnly() ListOption {
	return func(o *listOptions) { o.keysOnly = true }
}

// After lists only keys greater than cursor: pass a page's Next to get
// the page after it.
func After(cursor []byte) ListOption {
	return func(o *listOptions) { o.after = cursor }
}

// errRerouted ends a group's part of a page when the configuration the
// client routes by no longer gives all of its shards to one group.
var errRerouted = errors.New("shardkv: the shards moved")

// List returns one page of the keys in a range (WithPrefix, WithRange;
// every key without either), in byte order, after a cursor (After), with
// their values and versions (unless WithKeysOnly), at most WithLimit keys.
// It fails with ErrKeyTooLarge for a bound or cursor above the key limit,
// or, once ctx ends or the retries give up, with the last error.
//
// Keys hash to shards, so a page asks every group for its shards' keys,
// at once, and merges the answers. Each group reads its part at one
// linearizable point within the call, at which it serves every shard it
// answers for; a shard moving is waited for, never skipped. So a page
// reflects every write acknowledged before the call and none begun after
// it returned; it is not one snapshot of the whole store: writes
// concurrent with the call may show in one group's part and not in
// another's. A listing page after page, each After the previous Next,
// returns no key twice, and every key that existed for the whole listing
// exactly once, whatever shards move meanwhile (see docs/design.md,
// "Listing").
func (c *Client) List(ctx context.Context, opts ...ListOption) (ListResult, error) {
	o := listOptions{limit: DefaultListLimit}
	for _, fn := range opts {
		fn(&o)
	}
	c.mu.RLock()
	numShards := c.numShards
	c.mu.RUnlock()
	pending := make([]uint32, numShards)
	for i := range pending {
		pending[i] = uint32(i)
	}
	req := &kvpb.ListRequest{Shards: pending, Start: o.start, End: o.end, After: o.after, Limit: o.limit, KeysOnly: o.keysOnly}
	if err := kvpb.CheckList(req, numShards, c.opts.limits.maxKeyBytes()); err != nil {
		return ListResult{}, err
	}
	var parts []*kvpb.ListReply
	for len(pending) > 0 {
		replies, rerouted, err := c.listParts(ctx, req, c.partition(pending))
		if err != nil {
			return ListResult{}, err
		}
		parts, pending = append(parts, replies...), rerouted
	}
	return mergePage(parts, int(o.limit)), nil
}

// partition splits shards by the group that owns them in the current
// configuration.
func (c *Client) partition(shards []uint32) [][]uint32 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	byGroup := map[uint64][]uint32{}
	for _, s := range shards {
		gid := c.cfg.Shards[s]
		byGroup[gid] = append(byGroup[gid], s)
	}
	var parts [][]uint32
	for _, p := range byGroup {
		parts = append(parts, p)
	}
	return parts
}

// shardsRoute routes to the group that owns every one of shards, and
// fails with errRerouted once they are not one group's.
func (c *Client) shardsRoute(shards []uint32) func() (target, error) {
	return func() (target, error) {
		c.mu.RLock()
		defer c.mu.RUnlock()
		gid := c.cfg.Shards[shards[0]]
		for _, s := range shards[1:] {
			if c.cfg.Shards[s] != gid {
				return target{}, errRerouted
			}
		}
		return c.targetOf(gid), nil
	}
}

// listParts asks each group for its part of a page (req for the shards of
// the part), at once. It returns the answers, and the shards of the parts
// whose shards moved apart meanwhile, to be asked again by the new
// configuration.
func (c *Client) listParts(ctx context.Context, req *kvpb.ListRequest, parts [][]uint32) (replies []*kvpb.ListReply, rerouted []uint32, err error) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, shards := range parts {
		wg.Go(func() {
			part := &kvpb.ListRequest{Shards: shards, Start: req.Start, End: req.End, After: req.After,
				Limit: req.Limit, KeysOnly: req.KeysOnly}
			var reply *kvpb.ListReply
			_, err := c.doRouted(ctx, c.shardsRoute(shards), false, func(ctx context.Context, kv kvpb.KVClient, gid uint64) error {
				var err error
				part.Group = gid // attempts are sequential
				reply, err = kv.List(ctx, part)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, errRerouted):
				rerouted = append(rerouted, shards...)
			case err != nil:
				errs = append(errs, err)
			default:
				replies = append(replies, reply)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, nil, errs[0]
	}
	return replies, rerouted, nil
}

// mergePage merges the groups' answers into a page of at most limit keys
// (0: no count limit). An answer cut short (More) holds nothing past its
// last key, so the page ends at the smallest such key.
func mergePage(parts []*kvpb.ListReply, limit int) ListResult {
	var (
		kvs     []*kvpb.KeyValue
		horizon []byte
		more    bool
	)
	for _, p := range parts {
		kvs = append(kvs, p.GetKvs()...)
		if n := len(p.GetKvs()); p.GetMore() && n > 0 {
			last := p.GetKvs()[n-1].GetKey()
			if !more || bytes.Compare(last, horizon) < 0 {
				horizon = last
			}
			more = true
		}
	}
	slices.SortFunc(kvs, func(a, b *kvpb.KeyValue) int { return bytes.Compare(a.GetKey(), b.GetKey()) })
	if more {
		kvs = kvs[:sortedCount(kvs, horizon)]
	}
	if limit > 0 && len(kvs) > limit {
		kvs, more = kvs[:limit], true
	}
	page := ListResult{More: more, KVs: make([]KeyValue, len(kvs))}
	for i, kv := range kvs {
		page.KVs[i] = KeyValue{Key: kv.GetKey(), Value: kv.GetValue(), Version: kv.GetVersion()}
	}
	if len(kvs) > 0 {
		page.Next = kvs[len(kvs)-1].GetKey()
	}
	return page
}

// sortedCount returns how many of kvs, sorted, have keys up to horizon.
func sortedCount(kvs []*kvpb.KeyValue, horizon []byte) int {
	n, _ := slices.BinarySearchFunc(kvs, horizon, func(kv *kvpb.KeyValue, h []byte) int {
		if bytes.Compare(kv.GetKey(), h) <= 0 {
			return -1
		}
		return 1
	})
	return n
}
