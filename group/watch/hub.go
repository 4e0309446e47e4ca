package watch

import (
	"bytes"
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/group"
)

// Config bounds a hub's memory. Zero fields take the defaults.
type Config struct {
	// HistoryChanges and HistoryBytes bound the retained changes (count,
	// and bytes of keys and values); default 65536 and 16 MiB.
	HistoryChanges int
	HistoryBytes   int
	// WatcherBuffer bounds the events queued for one watcher before it is
	// cancelled as fallen behind (default 4096).
	WatcherBuffer int
}

func (c Config) withDefaults() Config {
	c.HistoryChanges = cmp.Or(c.HistoryChanges, 1<<16)
	c.HistoryBytes = cmp.Or(c.HistoryBytes, 16<<20)
	c.WatcherBuffer = cmp.Or(c.WatcherBuffer, 4096)
	return c
}

// maxReplyBytes bounds the events of one reply, well below the gRPC
// message limit (rpc.MaxMessageBytes).
const maxReplyBytes = 4 << 20

// record is one retained change: a write (ev) or a shard notice.
type record struct {
	index     uint64
	shard     int
	kind      group.ChangeKind
	configNum uint64
	ev        *kvpb.WatchEvent // shared by every watcher; never modified
}

func (r *record) bytes() int {
	if r.ev == nil {
		return 0
	}
	return len(r.ev.Key) + len(r.ev.Value)
}

// Hub is one replica's feed of changes, its history and its watchers. It
// implements group.Observer; make it with New.
type Hub struct {
	cfg Config

	mu         sync.Mutex
	lo, hi     uint64 // the history covers the changes of (lo, hi]
	shards     group.Shards
	history    []record // oldest first, from head
	head       int
	histBytes  int
	keys       map[string]map[*Watcher]struct{} // key watchers by key
	prefixes   map[string]map[*Watcher]struct{} // prefix watchers by prefix
	prefixLens []int                            // the lengths of prefixes, ascending, each once
	all        map[*Watcher]struct{}
}

var _ group.Observer = (*Hub)(nil)

// New returns a hub fed by sm (its observer from now on).
func New(sm *group.StateMachine, cfg Config) *Hub {
	h := NewDetached(cfg)
	sm.Observe(h)
	return h
}

// NewDetached returns a hub fed only by calls to its Applied and Restored
// (tests and benchmarks).
func NewDetached(cfg Config) *Hub {
	return &Hub{cfg: cfg.withDefaults(), keys: map[string]map[*Watcher]struct{}{},
		prefixes: map[string]map[*Watcher]struct{}{}, all: map[*Watcher]struct{}{}}
}

// Applied implements group.Observer: it retains the changes and offers
// each to the watchers it may concern.
func (h *Hub) Applied(index uint64, changes []group.Change, shards *group.Shards) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range changes {
		c := &changes[i]
		r := record{index: c.Index, shard: c.Shard, kind: c.Kind, configNum: c.ConfigNum}
		if c.Kind == group.ChangeWrite {
			r.ev = &kvpb.WatchEvent{Op: c.Op, Key: c.Key, Value: c.Value, Version: c.Version, Index: c.Index, Shard: uint32(c.Shard)}
		}
		h.retain(r)
		if r.ev == nil {
			for w := range h.all {
				h.offer(w, &r)
			}
			continue
		}
		for w := range h.keys[string(r.ev.Key)] {
			h.offer(w, &r)
		}
		for _, l := range h.prefixLens {
			if l > len(r.ev.Key) {
				break
			}
			for w := range h.prefixes[string(r.ev.Key[:l])] {
				h.offer(w, &r)
			}
		}
	}
	if shards != nil {
		h.shards = *shards
	}
	h.hi = max(h.hi, index)
}

// Restored implements group.Observer: the history starts again at index,
// and every watcher is cancelled (its resume finds the changes before
// index gone, and says so).
func (h *Hub) Restored(index uint64, shards group.Shards) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.all {
		h.cancel(w)
	}
	clear(h.history)
	h.history, h.head, h.histBytes = h.history[:0], 0, 0
	h.lo, h.hi, h.shards = index, index, shards
}

// retain appends r to the history, evicting the oldest changes beyond the
// bounds.
func (h *Hub) retain(r record) {
	h.history = append(h.history, r)
	h.histBytes += r.bytes()
	for len(h.history)-h.head > h.cfg.HistoryChanges || (h.histBytes > h.cfg.HistoryBytes && len(h.history)-h.head > 1) {
		old := &h.history[h.head]
		h.histBytes -= old.bytes()
		h.lo = max(h.lo, old.index)
		*old = record{}
		h.head++
	}
	if h.head > len(h.history)/2 && h.head > 64 {
		n := copy(h.history, h.history[h.head:])
		clear(h.history[n:])
		h.history, h.head = h.history[:n], 0
	}
}

// Watchers returns the number of registered watchers.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.all)
}

// Bounds returns the indexes the history covers: the changes of (lo, hi].
func (h *Hub) Bounds() (lo, hi uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lo, h.hi
}

// shardWatch is one shard of a watcher: either active (its changes after
// index after are due) or waiting for its arrival in configuration
// pending.
type shardWatch struct {
	after   uint64
	pending uint64
}

// item is one queued part of a stream: an event or a notice.
type item struct {
	ev     *kvpb.WatchEvent
	notice *kvpb.WatchNotice
}

// Watcher is one watch stream's registration with a Hub (Hub.Watch): read
// it with Next and Close it when the stream ends.
type Watcher struct {
	// Every field is the hub's, under h.mu.
	h      *Hub
	key    []byte
	prefix bool
	shards map[int]*shardWatch
	// A start from a version of the key, until the first change
	// delivered: skip the key's changes before first (the change that
	// made the version, in the history), or with first nil those before
	// fromVersion (kvpb.WatchEvent.BeforeVersion).
	first       *kvpb.WatchEvent
	fromVersion uint64

	queue      []item
	events     int  // the events in queue
	replaying  bool // registering: the history's changes are not bounded by the buffer
	fellBehind bool
	closed     bool
	wake       chan struct{} // cap 1: something was queued
}

// KeyVersion is the watched key's version as the state machine read it
// at applied index Applied (group.StateMachine.KeyVersion), for a watch
// from a version of the key (WatchShard.from_version). The zero value
// (Known false): the state machine did not serve the key's shard.
type KeyVersion struct {
	Version, Applied uint64
	Known            bool
}

// Watch registers a watcher of req's key or prefix in req's shards,
// replaying the history for the shards that resume, and returns it. cur
// is needed only by a shard that starts from a version of the key (zero
// otherwise). Notices for shards it cannot watch (NOT_SERVED, COMPACTED)
// are its first reply. Close it when the stream ends.
func (h *Hub) Watch(req *kvpb.WatchRequest, cur KeyVersion) *Watcher {
	w := &Watcher{h: h, key: slices.Clone(req.GetKey()), prefix: req.GetPrefix(), shards: map[int]*shardWatch{},
		wake: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ws := range req.GetShards() {
		s := int(ws.GetShard())
		switch {
		case ws.GetFromVersion() > 0:
			after, first, kind := h.versionStart(s, w.key, ws.GetFromVersion(), cur)
			if kind != kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED {
				w.push(item{notice: &kvpb.WatchNotice{Shard: ws.GetShard(), Kind: kind, Index: h.lo, ConfigNum: h.shards.ConfigNum}})
				continue
			}
			w.shards[s] = &shardWatch{after: after}
			if w.first = first; first == nil {
				w.fromVersion = ws.GetFromVersion()
			}
			w.push(item{notice: &kvpb.WatchNotice{Shard: ws.GetShard(), Kind: kind, Index: after}})
		case ws.GetAfterIndex() > 0:
			if ws.GetAfterIndex() < h.lo {
				w.push(item{notice: &kvpb.WatchNotice{Shard: ws.GetShard(), Kind: kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_COMPACTED, Index: h.lo}})
				continue
			}
			w.shards[s] = &shardWatch{after: ws.GetAfterIndex()}
		case ws.GetArrivedIn() > 0:
			w.shards[s] = &shardWatch{pending: ws.GetArrivedIn()}
		case h.shards.Servable(s):
			w.shards[s] = &shardWatch{after: h.hi}
			w.push(item{notice: &kvpb.WatchNotice{Shard: ws.GetShard(), Kind: kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED, Index: h.hi}})
		case h.shards.Owned(s):
			// Arriving: watched from its arrival (nothing of it is
			// written here before).
			w.shards[s] = &shardWatch{pending: h.shards.ConfigNum, after: h.hi}
		default:
			w.push(item{notice: &kvpb.WatchNotice{Shard: ws.GetShard(), Kind: kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_NOT_SERVED, ConfigNum: h.shards.ConfigNum}})
		}
	}
	w.replaying = true
	for i := h.head; i < len(h.history); i++ {
		h.offer(w, &h.history[i])
	}
	w.replaying = false
	for s, sw := range w.shards {
		if sw.pending == 0 {
			continue
		}
		// Not arrived within the history: it will (the group is before
		// that configuration, or at it and still pulling), or it did
		// before the history begins (a gap).
		if h.shards.ConfigNum < sw.pending || (h.shards.ConfigNum == sw.pending && h.shards.Owned(s) && !h.shards.Servable(s)) {
			continue
		}
		w.push(item{notice: &kvpb.WatchNotice{Shard: uint32(s), Kind: kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_COMPACTED, Index: h.lo}})
		delete(w.shards, s)
	}
	h.all[w] = struct{}{}
	if w.prefix {
		index(h.prefixes, w)
		if i, found := slices.BinarySearch(h.prefixLens, len(w.key)); !found {
			h.prefixLens = slices.Insert(h.prefixLens, i, len(w.key))
		}
	} else {
		index(h.keys, w)
	}
	return w
}

// versionStart is where a watch of key in shard s from version v of the
// key's current life starts: STARTED after the index before the change
// that made v (first), if the history holds it (the key's changes before
// it at that index, of one batch entry, are skipped); STARTED after hi if
// the key's version now is below v (v is still to come: nothing is
// missed);
// COMPACTED if v is older than the history; NOT_SERVED if the shard is
// not served here. The newest change of the key in the history gives its
// version now; without one, cur does, if the history covers every change
// after the index cur was read at. h.mu is held.
func (h *Hub) versionStart(s int, key []byte, v uint64, cur KeyVersion) (after uint64, first *kvpb.WatchEvent, kind kvpb.WatchNoticeKind) {
	if !h.shards.Servable(s) || !cur.Known {
		return 0, nil, kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_NOT_SERVED
	}
	newest := true
	for i := len(h.history) - 1; i >= h.head; i-- {
		r := &h.history[i]
		if r.ev == nil || r.shard != s || !bytes.Equal(r.ev.Key, key) {
			continue
		}
		switch {
		case r.ev.Version == v:
			return r.index - 1, r.ev, kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED
		case r.ev.Version < v && newest: // a delete (0) included
			return h.hi, nil, kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED
		case r.ev.Version < v:
			// A life's versions rise by one per change; below v without
			// passing it, only across a delete: v of the current life is
			// not here.
			return 0, nil, kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_COMPACTED
		}
		newest = false
	}
	if newest && cur.Applied >= h.lo && cur.Version < v {
		return h.hi, nil, kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED
	}
	return 0, nil, kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_COMPACTED
}

func index(m map[string]map[*Watcher]struct{}, w *Watcher) {
	set := m[string(w.key)]
	if set == nil {
		set = map[*Watcher]struct{}{}
		m[string(w.key)] = set
	}
	set[w] = struct{}{}
}

// offer gives r to w if w watches it; h.mu is held.
func (h *Hub) offer(w *Watcher, r *record) {
	sw := w.shards[r.shard]
	if sw == nil || w.fellBehind {
		return
	}
	switch r.kind {
	case group.ChangeWrite:
		if sw.pending != 0 || r.index <= sw.after || !w.matches(r.ev.Key) {
			return
		}
		if w.first != nil || w.fromVersion > 0 {
			if r.ev != w.first && (w.first != nil || r.ev.BeforeVersion(w.fromVersion)) {
				return
			}
			w.first, w.fromVersion = nil, 0
		}
		if !w.replaying && w.events >= h.cfg.WatcherBuffer {
			h.cancel(w)
			return
		}
		w.events++
		w.push(item{ev: r.ev})
	case group.ChangeArrived:
		if sw.pending == 0 || r.configNum != sw.pending || r.index <= sw.after {
			return
		}
		sw.pending, sw.after = 0, r.index
		w.push(item{notice: &kvpb.WatchNotice{Shard: uint32(r.shard), Kind: kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED, Index: r.index}})
	case group.ChangeLeft:
		if r.index <= sw.after || (sw.pending != 0 && r.configNum <= sw.pending) {
			return // before the watch's start, or an earlier stay
		}
		delete(w.shards, r.shard)
		w.push(item{notice: &kvpb.WatchNotice{Shard: uint32(r.shard), Kind: kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_LEFT, Index: r.index, ConfigNum: r.configNum}})
	}
}

func (w *Watcher) matches(key []byte) bool {
	if w.prefix {
		return bytes.HasPrefix(key, w.key)
	}
	return bytes.Equal(key, w.key)
}

// push queues it and wakes the stream; h.mu is held.
func (w *Watcher) push(it item) {
	w.queue = append(w.queue, it)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// cancel drops w as fallen behind; h.mu is held.
func (h *Hub) cancel(w *Watcher) {
	w.fellBehind = true
	clear(w.queue)
	w.queue, w.events = nil, 0
	h.unindex(w)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (h *Hub) unindex(w *Watcher) {
	delete(h.all, w)
	m := h.keys
	if w.prefix {
		m = h.prefixes
	}
	set := m[string(w.key)]
	if _, ok := set[w]; !ok {
		return
	}
	delete(set, w)
	if len(set) > 0 {
		return
	}
	delete(m, string(w.key))
	if w.prefix {
		for p := range h.prefixes {
			if len(p) == len(w.key) {
				return
			}
		}
		if i, found := slices.BinarySearch(h.prefixLens, len(w.key)); found {
			h.prefixLens = slices.Delete(h.prefixLens, i, i+1)
		}
	}
}

// Close unregisters w.
func (w *Watcher) Close() {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	w.closed = true
	w.h.unindex(w)
}

// Next returns the next reply of w's stream: what is queued (at most
// about 4 MiB of events), waiting for something if nothing is.
// When progress fires, the reply is sent even if empty, with
// ProgressIndex set: every change up to it that w watches is in this
// reply or an earlier one. It fails with kvpb.ErrWatchFellBehind once w
// was cancelled, or with ctx's error.
func (w *Watcher) Next(ctx context.Context, progress <-chan time.Time) (*kvpb.WatchReply, error) {
	h := w.h
	for {
		h.mu.Lock()
		if w.fellBehind {
			h.mu.Unlock()
			return nil, kvpb.ErrWatchFellBehind
		}
		if len(w.queue) > 0 {
			reply := w.take()
			h.mu.Unlock()
			return reply, nil
		}
		h.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-progress:
			h.mu.Lock()
			reply := w.take()
			if len(w.queue) == 0 && !w.fellBehind {
				reply.ProgressIndex = h.hi
			}
			h.mu.Unlock()
			return reply, nil
		}
	}
}

// take moves a prefix of the queue into a reply; h.mu is held.
func (w *Watcher) take() *kvpb.WatchReply {
	reply := &kvpb.WatchReply{}
	n, size := 0, 0
	for ; n < len(w.queue) && size < maxReplyBytes; n++ {
		it := w.queue[n]
		if it.ev != nil {
			reply.Events = append(reply.Events, it.ev)
			size += len(it.ev.Key) + len(it.ev.Value)
			w.events--
		} else {
			reply.Notices = append(reply.Notices, it.notice)
		}
	}
	rest := copy(w.queue, w.queue[n:])
	clear(w.queue[rest:])
	w.queue = w.queue[:rest]
	return reply
}
