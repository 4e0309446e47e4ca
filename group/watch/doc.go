// Package watch is a replica's side of watches: one feed of the changes its
// group's state machine applies, a bounded history of them, and the
// watchers it fans them out to (etcd's watchable store and TiKV's CDC are
// the models). Package groupserver serves it as kvpb.KV/Watch; package
// client drives it (client.Watch).
//
// # What a change is, and where it comes from
//
// The group's state machine stays pure: it hands a group.Observer, once
// per Apply after the batch committed, the changes of that Apply in log
// order, each with its entry's index (group.Change): a write that changed
// a key (put, append, delete of a key that existed; its new value and
// version), and a shard that arrived (became servable: the last handoff
// chunk, a configuration that gives it from nowhere or back, the end of a
// restore) or left (was owned at the previous point, is not now: a
// configuration that takes it away, an abandoned pull). Every replica
// applies every entry, so every replica — follower or leader — has the
// feed and serves watchers; a watcher on a follower sees a change when
// that follower applies it.
//
// # Positions
//
// A group's log index orders its changes, and is the same on every replica
// of the group. A watcher therefore asks per shard:
//
//	after_index X   the shard's changes applied after index X of this
//	                group's log (a resume, on any replica of the group);
//	arrived_in N    the shard's changes from its arrival here in
//	                configuration N (its previous owner said it left in N);
//	from_version V  a key watch only: from the change that made version
//	                V of the key's current life (after its last delete),
//	                if the history holds it; from now, skipping the key's
//	                changes before V, if the key is below V; else
//	                COMPACTED (see Hub.Watch and docs/design.md);
//	neither         from now: the shard's changes after the replica's
//	                applied index at registration, if it serves the shard
//	                (or from its arrival, if it is pulling it).
//
// and gets, per shard, STARTED (the index after which it is covered), its
// changes, periodic progress (every change up to index P was sent, so a
// resume need not go back further), LEFT (the shard left at index I; its
// changes from configuration N on are its owner at N's), NOT_SERVED (a
// start from now at a replica that does not own the shard) or COMPACTED
// (the history here no longer holds the changes after the point asked
// for: a gap, which the client reports).
//
// A shard's changes come from one group at a time: its owner serves and
// writes it only while servable, the previous owner froze it before the
// data left, and the new owner writes it only after the data arrived. So
// "everything before LEFT at the old owner, then everything after ARRIVED
// at the new one" is each key's whole history, in version order, with
// nothing twice. Across keys (and across shards) there is no global order:
// two keys' changes may be delivered in either order.
//
// # History
//
// The hub keeps the most recent changes (by count and bytes; see
// Config), with their indexes. It covers (Lo, Hi]: Hi is the last applied
// index it heard of, Lo the index before its oldest retained change (the
// applied index at start or at a snapshot install, then the index of the
// last change evicted). A resume after X ≥ Lo is served from it; one before
// Lo is COMPACTED. A restart, a snapshot installed from the leader (the
// changes it skipped are unknown) and a shard moved to a group whose
// history does not reach back to its arrival are gaps, told, never
// hidden.
//
// # Fan-out
//
// Publishing a change costs a lookup, not a scan of the watchers: key
// watchers are in a map by key, prefix watchers in a map by prefix plus the
// set of prefix lengths in use, so a change to key k looks up k and k[:L]
// for each length L in use. Each matching watcher gets a pointer to the
// one immutable event (no copy per watcher) in its own queue, bounded
// (Config.WatcherBuffer). A watcher whose queue is full is cancelled at
// once (ErrFellBehind) rather than ever blocking apply; its client resumes
// from the last index it got, from the history if it still covers it,
// otherwise with a COMPACTED gap. Each watcher's stream goroutine drains
// its queue and sends; the goroutine applying (raftnode's apply goroutine
// or Ready loop) never waits on a network.
//
// A registration (and a resume) replays the history under the hub's lock,
// so no change is missed or sent twice between the replay and the live
// feed: the hub has one feed, and a watcher is synced from the moment it
// is registered.
package watch
