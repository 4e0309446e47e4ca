package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/rpc"
)

// ErrWatchGap: a watch missed changes to the keys of one shard (the
// servers no longer held them when the watch resumed: it fell far behind,
// or a replica restarted, or the shard moved to a group whose history
// does not reach back to its arrival). The watch goes on from then; read
// the keys again to resync.
var ErrWatchGap = errors.New("shardkv: watch missed changes")

// EventType is what a change did to its key.
type EventType int

// The kinds of change.
const (
	// EventPut: a put set the key's value.
	EventPut EventType = iota + 1
	// EventAppend: an append added to the key's value (or created it).
	EventAppend
	// EventDelete: a delete removed the key.
	EventDelete
)

// String returns "PUT", "APPEND" or "DELETE", or "UNKNOWN" for any other
// value.
func (t EventType) String() string {
	switch t {
	case EventPut:
		return "PUT"
	case EventAppend:
		return "APPEND"
	case EventDelete:
		return "DELETE"
	}
	return "UNKNOWN"
}

// Event is one change to a watched key.
type Event struct {
	// Type is what the change did to the key.
	Type EventType
	// Key is the changed key.
	Key []byte
	// Value is the key's value after the change (after an append, the
	// whole value; nil after a delete).
	Value []byte
	// Version is the key's version after the change (0 after a delete).
	Version uint64
}

// WatchResponse is the next part of a watch: changes, in each key's
// version order, or a notice.
type WatchResponse struct {
	Events []Event
	// Created: every shard the watch covers is registered with its owner;
	// every change applied from now on is delivered (WithCreatedNotify).
	Created bool
	// Gap, when set (it wraps ErrWatchGap), says that changes to the keys
	// of shard GapShard were missed; the watch goes on.
	Gap error
	// GapShard is the shard whose keys missed changes; meaningful only
	// with Gap.
	GapShard int
	// Canceled: the watch ended (its context ended, or a request was
	// refused as malformed, or by auth: Err says why); the channel closes
	// after it.
	Canceled bool
	err      error
}

// Err returns the gap or the cause of the end, if any.
func (r WatchResponse) Err() error {
	if r.Gap != nil {
		return r.Gap
	}
	return r.err
}

// WatchChan delivers a watch's responses; it is closed when the watch
// ends.
type WatchChan <-chan WatchResponse

type watchOptions struct {
	prefix      bool
	created     bool
	fromVersion uint64
}

// WatchOption modifies a watch, in the clientv3 style.
type WatchOption func(*watchOptions)

// WatchPrefix watches every key that starts with the given key (an empty
// key: every key). (List's WithPrefix names its prefix; a watch's prefix
// is its key argument.)
func WatchPrefix() WatchOption { return func(o *watchOptions) { o.prefix = true } }

// WithCreatedNotify sends a Created response once every shard the watch
// covers is registered: changes applied after it are all delivered.
func WithCreatedNotify() WatchOption { return func(o *watchOptions) { o.created = true } }

// FromVersion starts a key watch (not a prefix: the watch ends with
// rpcerr.ErrMalformed) at the change that made version v (from 1) of the
// key's current life, instead of now: the key's changes with a version of
// at least v, in order, then every change as it happens. It is how a
// reader resumes from the last version it saw (v = that version + 1).
//
// Versions restart at 1 after a delete, so v is of the life the key is in
// when the watch starts. If that life's version v is still to come (the
// key is below it, or deleted), the watch starts now and skips the
// changes before v, unless the key is deleted first: the delete ends that
// life, and it and every change after it (versions from 1 again) are
// delivered. If the servers no longer hold the change that made v (their
// history is bounded), the first response has Gap set (ErrWatchGap) and
// the watch goes on from then: read the key to resync. etcd's analogue is
// a start revision and ErrCompacted.
func FromVersion(v uint64) WatchOption { return func(o *watchOptions) { o.fromVersion = v } }

// Watch streams the changes to key (or, WatchPrefix, to every key under
// it) applied from now on (or, FromVersion, from a version of the key),
// until ctx ends: puts, appends and deletes with the value and version
// after each, every change to a key once and in its version order, across leader changes and shard migrations. Changes
// to different keys come in no particular order. Changes the servers can
// no longer deliver are reported, never skipped silently: a response with
// Gap set (ErrWatchGap) names the shard whose keys missed changes.
//
// A slow reader holds up only its own watch: the servers cancel a stream
// that falls behind, and the client resumes it from the last change it
// delivered (a gap if the servers no longer hold what followed).
//
//	for resp := range c.Watch(ctx, []byte("config/"), client.WatchPrefix()) {
//		if resp.Gap != nil { /* re-read the keys of resp.GapShard */ }
//		for _, ev := range resp.Events { fmt.Println(ev.Type, string(ev.Key), ev.Version) }
//	}
func (c *Client) Watch(ctx context.Context, key []byte, opts ...WatchOption) WatchChan {
	var o watchOptions
	for _, fn := range opts {
		fn(&o)
	}
	out := make(chan WatchResponse)
	w := &watch{c: c, key: append([]byte{}, key...), opts: o, from: o.fromVersion, out: out, cursors: map[int]*cursor{},
		streams: map[uint64]*groupStream{}, msgs: make(chan streamMsg), next: map[uint64]int{}, addrs: map[uint64][]string{},
		backoff: rpc.NewBackoff(20*time.Millisecond, time.Second)}
	go w.run(ctx)
	return out
}

// cursor is where a shard's part of a watch stands.
type cursor struct {
	gid       uint64 // the group asked for it; 0: to place
	after     uint64 // started: its changes after this index of gid's log are due
	started   bool
	arrivedIn uint64 // not started: wait for its arrival in this configuration
	// One log entry (a batch of writes) may hold many changes of the
	// shard, and a stream may end between them: n of the changes of
	// entry at (> after) were received, and a resume (after after) sends
	// them again, skip of them still to drop.
	at      uint64
	n, skip int
}

// next reports whether the change at index is new (not received before),
// and counts it.
func (cu *cursor) next(index uint64) bool {
	switch {
	case index <= cu.after || index < cu.at:
		return false
	case index == cu.at && cu.skip > 0:
		cu.skip--
		return false
	case index == cu.at:
		cu.n++
	default: // a later entry: the one at cu.at was whole
		cu.after = max(cu.after, cu.at)
		cu.at, cu.n, cu.skip = index, 1, 0
	}
	return true
}

type groupStream struct {
	gen    int
	cancel context.CancelFunc
}

type streamMsg struct {
	gid   uint64
	gen   int
	reply *kvpb.WatchReply
	err   error
}

type watch struct {
	c    *Client
	key  []byte
	opts watchOptions
	// from: until the first change delivered, the key's version the
	// watch starts at (FromVersion); 0 once started, or if not asked for.
	from    uint64
	out     chan<- WatchResponse
	cursors map[int]*cursor
	streams map[uint64]*groupStream
	gen     int
	msgs    chan streamMsg
	next    map[uint64]int      // per group, the replica to ask next
	addrs   map[uint64][]string // per group, its replicas when a shard was placed there
	created bool
	backoff interface{ NextBackOff() time.Duration }
}

func (w *watch) run(ctx context.Context) {
	defer close(w.out)
	defer func() {
		for _, s := range w.streams {
			s.cancel()
		}
	}()
	if w.opts.prefix && w.from > 0 {
		w.send(ctx, WatchResponse{Canceled: true, err: fmt.Errorf("%w: FromVersion starts a key watch, not a prefix", rpcerr.ErrMalformed)})
		return
	}
	w.c.mu.RLock()
	n := w.c.numShards
	w.c.mu.RUnlock()
	if w.opts.prefix {
		for s := 0; s < n; s++ {
			w.cursors[s] = &cursor{}
		}
	} else {
		w.cursors[config.ShardOf(w.key, n)] = &cursor{}
	}
	dirty := map[uint64]bool{}
	refresh := false
	for {
		retry := w.place(ctx, dirty, refresh)
		refresh = false
		for gid := range dirty {
			w.restart(ctx, gid)
		}
		clear(dirty)
		var wait <-chan time.Time
		if retry {
			wait = time.After(w.backoff.NextBackOff())
		}
		select {
		case <-ctx.Done():
			w.send(ctx, WatchResponse{Canceled: true, err: ctx.Err()})
			return
		case <-wait:
			refresh = true
		case m := <-w.msgs:
			if s := w.streams[m.gid]; s == nil || s.gen != m.gen {
				continue // a stream replaced since
			}
			if m.err != nil {
				if errors.Is(m.err, rpcerr.ErrMalformed) || errors.Is(m.err, rpcerr.ErrAuthFailed) || errors.Is(m.err, rpcerr.ErrPermissionDenied) {
					// Every replica would refuse it the same way.
					w.send(ctx, WatchResponse{Canceled: true, err: m.err})
					return
				}
				if !errors.Is(m.err, kvpb.ErrWatchFellBehind) {
					w.next[m.gid]++
					if rpc.Sleep(ctx, w.backoff.NextBackOff()) != nil {
						continue
					}
				}
				dirty[m.gid] = true
				continue
			}
			if w.handle(ctx, m.gid, m.reply) {
				// Not served where the configuration said: wait a little
				// (the group may not have applied it yet), then re-read it.
				_ = rpc.Sleep(ctx, w.backoff.NextBackOff())
				refresh = true
			}
		}
	}
}

// place finds the group of every shard to place (dirty gets the groups
// whose streams must restart). It reports whether some shard could not be
// placed yet.
func (w *watch) place(ctx context.Context, dirty map[uint64]bool, refresh bool) (retry bool) {
	if refresh {
		rctx, cancel := context.WithTimeout(ctx, w.c.opts.attemptTimeout)
		_ = w.c.refresh(rctx)
		cancel()
	}
	cur := w.c.Config()
	for shard, cu := range w.cursors {
		if cu.gid != 0 {
			continue
		}
		cfg := cur
		if cu.arrivedIn > cur.Num {
			retry = true // the client has not seen that configuration yet
			refresh = true
			continue
		}
		if cu.arrivedIn > 0 && cu.arrivedIn != cur.Num {
			qctx, cancel := context.WithTimeout(ctx, w.c.opts.attemptTimeout)
			q, _, err := w.c.ctl.Query(qctx, int64(cu.arrivedIn))
			cancel()
			if err != nil {
				retry = true
				continue
			}
			cfg = q
		}
		gid := cfg.Shards[shard]
		addrs := cur.Groups[gid]
		if len(addrs) == 0 {
			addrs = cfg.Groups[gid] // a group that left since: its addresses then
		}
		if gid == 0 || len(addrs) == 0 {
			retry = true
			continue
		}
		cu.gid = gid
		w.addrs[gid] = addrs
		dirty[gid] = true
	}
	return retry
}

// restart (re)opens the stream of group gid with every shard it is asked
// for, each from its cursor.
func (w *watch) restart(ctx context.Context, gid uint64) {
	if s := w.streams[gid]; s != nil {
		s.cancel()
		delete(w.streams, gid)
	}
	req := &kvpb.WatchRequest{Key: w.key, Prefix: w.opts.prefix, Group: gid}
	for shard, cu := range w.cursors {
		if cu.gid != gid {
			continue
		}
		ws := &kvpb.WatchShard{Shard: uint32(shard)}
		switch {
		case w.from > 0 && cu.arrivedIn == 0:
			// Nothing delivered yet: the group finds the start again (a
			// resume after an index would not skip what precedes it).
			ws.FromVersion = w.from
		case cu.started:
			ws.AfterIndex = cu.after
			cu.skip = cu.n
		case cu.arrivedIn > 0:
			ws.ArrivedIn = cu.arrivedIn
		}
		req.Shards = append(req.Shards, ws)
	}
	if len(req.Shards) == 0 {
		return
	}
	w.gen++
	sctx, cancel := context.WithCancel(ctx)
	w.streams[gid] = &groupStream{gen: w.gen, cancel: cancel}
	addrs := w.addrs[gid]
	addr := addrs[w.next[gid]%len(addrs)]
	go w.stream(sctx, gid, w.gen, addr, req)
}

// stream runs one watch stream, handing every reply (and its end) to run.
func (w *watch) stream(ctx context.Context, gid uint64, gen int, addr string, req *kvpb.WatchRequest) {
	deliver := func(m streamMsg) bool {
		select {
		case w.msgs <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	kv, err := w.c.kv(addr)
	if err != nil {
		deliver(streamMsg{gid: gid, gen: gen, err: err})
		return
	}
	st, err := kv.Watch(ctx, req)
	for err == nil {
		var r *kvpb.WatchReply
		if r, err = st.Recv(); err == nil && !deliver(streamMsg{gid: gid, gen: gen, reply: r}) {
			return
		}
	}
	deliver(streamMsg{gid: gid, gen: gen, err: kvpb.Errors.FromStatus(err)})
}

// handle applies one reply of gid's stream: the shards it starts, its
// events, then the shards it ends, then its progress. It reports whether
// the configuration should be re-read (a shard was not served where the
// client thought).
func (w *watch) handle(ctx context.Context, gid uint64, r *kvpb.WatchReply) (refresh bool) {
	for _, nt := range r.GetNotices() {
		if cu := w.cursors[int(nt.GetShard())]; cu != nil && cu.gid == gid && nt.GetKind() == kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_STARTED {
			*cu = cursor{gid: gid, started: true, after: nt.GetIndex()}
		}
	}
	var resp WatchResponse
	for _, ev := range r.GetEvents() {
		cu := w.cursors[int(ev.GetShard())]
		if cu == nil || cu.gid != gid || !cu.started || !cu.next(ev.GetIndex()) {
			continue // never twice
		}
		if w.from > 0 {
			// Skipped by the group too, but for a shard that moved
			// before the start, whose new owner knows no start version.
			if ev.BeforeVersion(w.from) {
				continue
			}
			w.from = 0
		}
		resp.Events = append(resp.Events, Event{Type: eventType(ev.GetOp()), Key: ev.GetKey(), Value: ev.GetValue(), Version: ev.GetVersion()})
	}
	if len(resp.Events) > 0 {
		w.backoff = rpc.NewBackoff(20*time.Millisecond, time.Second)
		if !w.send(ctx, resp) {
			return false
		}
	}
	for _, nt := range r.GetNotices() {
		shard := int(nt.GetShard())
		cu := w.cursors[shard]
		if cu == nil || cu.gid != gid {
			continue
		}
		switch nt.GetKind() {
		case kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_LEFT:
			*cu = cursor{arrivedIn: nt.GetConfigNum()}
		case kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_NOT_SERVED:
			*cu = cursor{}
			refresh = true
		case kvpb.WatchNoticeKind_WATCH_NOTICE_KIND_COMPACTED:
			gap := fmt.Errorf("%w: shard %d (group %d holds its changes from index %d on, the watch was at %d)",
				ErrWatchGap, shard, gid, nt.GetIndex(), cu.after)
			*cu = cursor{}
			w.from = 0 // the gap is told; the watch goes on from now
			if !w.send(ctx, WatchResponse{Gap: gap, GapShard: shard}) {
				return false
			}
		}
	}
	if p := r.GetProgressIndex(); p > 0 {
		for _, cu := range w.cursors {
			if cu.gid == gid && cu.started && p > cu.after {
				cu.after = p
				if cu.at <= p {
					cu.at, cu.n, cu.skip = 0, 0, 0
				}
			}
		}
	}
	if w.opts.created && !w.created && w.allStarted() {
		w.created = true
		w.send(ctx, WatchResponse{Created: true})
	}
	return refresh
}

func (w *watch) allStarted() bool {
	for _, cu := range w.cursors {
		if !cu.started {
			return false
		}
	}
	return true
}

// send delivers resp to the caller, or reports that ctx ended.
func (w *watch) send(ctx context.Context, resp WatchResponse) bool {
	select {
	case w.out <- resp:
		return true
	case <-ctx.Done():
		return false
	}
}

func eventType(op kvpb.WriteOp) EventType {
	switch op {
	case kvpb.WriteOp_WRITE_OP_PUT:
		return EventPut
	case kvpb.WriteOp_WRITE_OP_APPEND:
		return EventAppend
	case kvpb.WriteOp_WRITE_OP_DELETE:
		return EventDelete
	}
	return 0
}
