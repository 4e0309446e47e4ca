package group

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/session"
	"github.com/shardkv/shardkv/storage"
)

// Limits bound what clients may store. Every replica of a group must use
// the same limits: they decide outcomes at apply time.
type Limits struct {
	MaxKeySize   int           // default DefaultMaxKeySize
	MaxValueSize int           // default DefaultMaxValueSize
	SessionTTL   time.Duration // default 1 hour
}

// Default limits (see kvpb), which clients also check before sending.
const (
	// DefaultMaxKeySize is the default key limit: 4 KiB.
	DefaultMaxKeySize = kvpb.DefaultMaxKeySize
	// DefaultMaxValueSize is the default value limit: 1 MiB.
	DefaultMaxValueSize = kvpb.DefaultMaxValueSize
)

func (l Limits) withDefaults() Limits {
	l.MaxKeySize = cmp.Or(l.MaxKeySize, DefaultMaxKeySize)
	l.MaxValueSize = cmp.Or(l.MaxValueSize, DefaultMaxValueSize)
	l.SessionTTL = cmp.Or(l.SessionTTL, time.Hour)
	return l
}

// Check validates a write's sizes before it is proposed; the same rules
// apply again at apply time (kvpb.CheckWrite).
func (l Limits) Check(op kvpb.WriteOp, key, value []byte) error {
	l = l.withDefaults()
	return kvpb.CheckWrite(op, key, value, l.MaxKeySize, l.MaxValueSize)
}

// Keys under the replica's state prefix, beside its progress (applied
// index and replicated time), which package storage keeps there.
const (
	keyMeta    = 'm'
	keyData    = 'd'
	keySession = 's'
)

type shardMeta struct {
	state     ShardState
	nextChunk uint64
}

// meta is the group's view, kept in memory and persisted whole on change.
type meta struct {
	config, prev controller.Config
	shards       []shardMeta // one per shard; empty before the first configuration
	nextExpiry   int64
	incarnation  uint64 // see SetIncarnation; 0 until the first is applied
}

// StateMachine is a replica group's state. Apply and Restore are called by
// the raft node one at a time, in log order (its apply goroutine, or its
// Ready loop for a small batch); the read methods may run concurrently.
type StateMachine struct {
	db     *pebble.DB
	e      *storage.Engine // the engine of db: Restore ingests into it
	r      storage.Replica
	gid    uint64
	limits Limits

	mu      sync.RWMutex
	applied uint64
	now     int64 // replicated time at applied, unix ms (see session.Advance)
	meta    meta

	// configNum is meta.config.Num, published after every apply: every
	// reply's header reads it, without waiting for an apply in progress.
	configNum atomic.Uint64

	sessions sessionCache // see sessionCache
	versions versionCache // see versionCache

	// Buffers the write path reuses from one write to the next (Apply
	// holds mu): Pebble's batch copies the keys and values it is given.
	dataKeyBuf, sessionKeyBuf, valueBuf []byte
	sessionBuf                          grouppb.SessionRecord // encodes a write's session record

	observer Observer // see Observe; nil: changes are not collected
}

var _ raftnode.StateMachine = (*StateMachine)(nil)

// Open loads the state machine of replica r (group r.Group) from e, with
// limits (zero fields take the defaults; every replica of a group must use
// the same limits).
func Open(e *storage.Engine, r storage.Replica, limits Limits) (*StateMachine, error) {
	sm := &StateMachine{db: e.DB(), e: e, r: r, gid: r.Group, limits: limits.withDefaults()}
	progress, err := r.ReadProgress(sm.db)
	if err != nil {
		return nil, err
	}
	sm.applied, sm.now = progress.Applied, progress.Now
	if v, ok, err := storage.Get(sm.db, r.StateKey(keyMeta)); err != nil {
		return nil, err
	} else if ok {
		var pm grouppb.Meta
		if err := proto.Unmarshal(v, &pm); err != nil {
			return nil, fmt.Errorf("group %d replica %d: decode metadata: %w", r.Group, r.ID, err)
		}
		sm.meta = metaFromProto(&pm)
	}
	sm.configNum.Store(sm.meta.config.Num)
	return sm, nil
}

func metaFromProto(pm *grouppb.Meta) meta {
	m := meta{config: controller.ConfigFromProto(pm.GetConfig()), prev: controller.ConfigFromProto(pm.GetPrev()),
		nextExpiry: pm.GetNextExpiry(), incarnation: pm.GetIncarnation()}
	for _, s := range pm.GetShards() {
		m.shards = append(m.shards, shardMeta{state: ShardState(s.GetState()), nextChunk: s.GetNextChunk()})
	}
	return m
}

func (m *meta) toProto() *grouppb.Meta {
	pm := &grouppb.Meta{Config: m.config.ToProto(), Prev: m.prev.ToProto(), NextExpiry: m.nextExpiry, Incarnation: m.incarnation}
	for _, s := range m.shards {
		pm.Shards = append(pm.Shards, &grouppb.ShardMeta{State: uint32(s.state), NextChunk: s.nextChunk})
	}
	return pm
}

// Now returns the replicated time (unix milliseconds) at the applied
// index: what a new leader's session.Clock starts from.
func (sm *StateMachine) Now() int64 {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.now
}

// Applied implements raftnode.StateMachine.
func (sm *StateMachine) Applied() uint64 {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.applied
}

// apply is the work of one Apply call: the batch it writes, whether the
// metadata changed, and what the observer is told once it commits.
type apply struct {
	b           *pebble.Batch
	metaChanged bool

	observed bool   // an observer listens: collect changes
	index    uint64 // the entry being applied
	changes  []Change
	shards   *Shards // the shard states after the last change to them
}

// Apply implements raftnode.StateMachine. Each entry's result is its
// command's outcome: an error (nil for success), a write's *WriteResult,
// or for a batch of writes (Command_Writes) a []any holding each write's
// outcome in the batch's order.
func (sm *StateMachine) Apply(ents []raftnode.Entry) ([]any, error) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	a := &apply{b: sm.db.NewIndexedBatch(), observed: sm.observer != nil}
	defer a.b.Close()
	committed := false
	defer func() {
		if !committed { // the caches may hold what the batch did not commit
			sm.forgetSessions()
			sm.forgetVersions()
		}
	}()
	results := make([]any, len(ents))
	last, err := raftnode.Commands(ents, sm.applied, func(i int, e raftnode.Entry) error {
		var cmd grouppb.Command
		if err := proto.Unmarshal(e.Data, &cmd); err != nil {
			results[i] = fmt.Errorf("%w: entry %d: %v", rpcerr.ErrMalformed, e.Index, err)
			return nil
		}
		a.index = e.Index
		res, err := sm.applyCommand(a, &cmd)
		if err != nil {
			return fmt.Errorf("apply entry %d: %w", e.Index, err)
		}
		results[i] = res
		return nil
	})
	if err != nil {
		return nil, err
	}
	if a.metaChanged {
		if err := storage.SetProto(a.b, sm.r.StateKey(keyMeta), sm.meta.toProto()); err != nil {
			return nil, err
		}
	}
	if err := sm.r.WriteProgress(a.b, storage.Progress{Applied: last, Now: sm.now}); err != nil {
		return nil, err
	}
	// Not synced: the log holds these entries durably, and Pebble's single
	// WAL makes this batch durable no later than any later synced write.
	if err := sm.e.Commit(a.b, false); err != nil {
		return nil, err
	}
	committed = true
	sm.applied = last
	sm.configNum.Store(sm.meta.config.Num)
	if sm.observer != nil {
		sm.observer.Applied(last, a.changes, a.shards)
	}
	return results, nil
}

// applyCommand applies one command. The first result is the command's
// outcome for its proposer (an error, nil, or a write's *WriteResult); the
// second is a storage failure, fatal to the
// replica.
func (sm *StateMachine) applyCommand(a *apply, cmd *grouppb.Command) (outcome any, err error) {
	sm.now = session.Advance(sm.now, cmd.GetStamp())
	if err := sm.expireSessions(a, sm.now); err != nil {
		return nil, err
	}
	switch cmd.GetOp().(type) {
	case *grouppb.Command_Write, *grouppb.Command_Writes:
	default:
		// Commands other than writes may change session records in ways
		// the cache does not follow (shards arrive, leave, are cleared).
		sm.forgetSessions()
		defer sm.forgetSessions()
		sm.forgetVersions() // they may change data keys too
		defer sm.forgetVersions()
		if a.observed {
			defer sm.observeShards(a, sm.shardStates())
		}
	}
	switch op := cmd.GetOp().(type) {
	case *grouppb.Command_Write:
		return sm.applyWrite(a, op.Write, sm.now)
	case *grouppb.Command_Writes:
		return sm.applyWrites(a, op.Writes.GetWrites(), sm.now)
	case *grouppb.Command_Install:
		return sm.installConfig(a, controller.ConfigFromProto(op.Install.GetConfig()))
	case *grouppb.Command_Insert:
		return sm.insertShard(a, op.Insert, sm.now)
	case *grouppb.Command_DeleteShard:
		return sm.deleteShard(a, op.DeleteShard.GetConfigNum(), int(op.DeleteShard.GetShard()))
	case *grouppb.Command_ConfirmDelete:
		return sm.confirmDelete(a, op.ConfirmDelete.GetConfigNum(), int(op.ConfirmDelete.GetShard())), nil
	case *grouppb.Command_HandOver:
		return sm.handOver(a, op.HandOver.GetConfigNum(), int(op.HandOver.GetShard())), nil
	case *grouppb.Command_AbandonPull:
		return nil, sm.abandonPull(a, op.AbandonPull.GetConfigNum(), int(op.AbandonPull.GetShard()))
	case *grouppb.Command_Restore:
		return sm.restoreShard(a, op.Restore, sm.now)
	case *grouppb.Command_SetIncarnation:
		return sm.setIncarnation(a, op.SetIncarnation.GetIncarnation()), nil
	}
	return rpcerr.ErrMalformed, nil
}

// shardOf returns the key's shard, or -1 before the first configuration.
func (sm *StateMachine) shardOf(key []byte) int {
	if len(sm.meta.shards) == 0 {
		return -1
	}
	return controller.ShardOf(key, len(sm.meta.shards))
}

// ownership says whether the group may serve shard now, and if not, why.
func (sm *StateMachine) ownership(shard int) error {
	if shard < 0 || shard >= len(sm.meta.shards) {
		return kvpb.ErrWrongGroup
	}
	switch st := sm.meta.shards[shard].state; {
	case st.servable():
		return nil
	case st == Pulling:
		return fmt.Errorf("%w: shard %d is arriving (configuration %d)", kvpb.ErrNotReady, shard, sm.meta.config.Num)
	case st == Restoring:
		return fmt.Errorf("%w: shard %d is being restored from a backup (configuration %d)", kvpb.ErrNotReady, shard, sm.meta.config.Num)
	default:
		return fmt.Errorf("%w: shard %d is %s here at configuration %d", kvpb.ErrWrongGroup, shard, st, sm.meta.config.Num)
	}
}

func (sm *StateMachine) dataKey(shard int, key []byte) []byte {
	return sm.appendDataKey(make([]byte, 0, stateKeyLen+5+len(key)), shard, key)
}

func (sm *StateMachine) sessionKey(shard int, client uint64) []byte {
	return sm.appendSessionKey(make([]byte, 0, stateKeyLen+13), shard, client)
}

// stateKeyLen is the length of a state machine key's prefix (see
// storage.Replica.AppendStateKey).
const stateKeyLen = 17

// appendDataKey appends the key of key's data in shard to dst.
func (sm *StateMachine) appendDataKey(dst []byte, shard int, key []byte) []byte {
	dst = append(sm.r.AppendStateKey(dst), keyData)
	return append(binary.BigEndian.AppendUint32(dst, uint32(shard)), key...)
}

// appendSessionKey appends the key of client's session record in shard
// to dst.
func (sm *StateMachine) appendSessionKey(dst []byte, shard int, client uint64) []byte {
	dst = append(sm.r.AppendStateKey(dst), keySession)
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint32(dst, uint32(shard)), client)
}

// shardSpans returns the key spans of a shard's data and of its sessions.
func (sm *StateMachine) shardSpans(shard int) (dataLo, dataHi, sessLo, sessHi []byte) {
	dataLo, dataHi = sm.r.StateSpan(binary.BigEndian.AppendUint32([]byte{keyData}, uint32(shard))...)
	sessLo, sessHi = sm.r.StateSpan(binary.BigEndian.AppendUint32([]byte{keySession}, uint32(shard))...)
	return
}

func (sm *StateMachine) dropShard(a *apply, shard int) error {
	dl, dh, sl, sh := sm.shardSpans(shard)
	if err := a.b.DeleteRange(dl, dh, nil); err != nil {
		return err
	}
	return a.b.DeleteRange(sl, sh, nil)
}
