package controller

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// Keys under the controller replica's state prefix, beside the progress
// (applied index and replicated time) that package storage keeps there.
const (
	keyNumShards = 'n'
	keyConfig    = 'c' // + config number (8 bytes, big endian)
	keySession   = 's' // + client id (8 bytes, big endian)
	keyAuth      = 'u' // the AuthImage: users (bcrypt hashes only), roles, signing key
)

// Store is a State persisted in Pebble: a raftnode.StateMachine. Reads
// (Query, Latest) may run concurrently with Apply.
type Store struct {
	db *pebble.DB
	e  *storage.Engine // the engine of db: Restore ingests into it
	r  storage.Replica

	mu      sync.RWMutex
	state   State
	applied uint64
	changed chan struct{} // closed and replaced whenever a configuration is added or auth changes
}

var _ raftnode.StateMachine = (*Store)(nil)

// OpenStore loads the controller state of replica r from e.
func OpenStore(e *storage.Engine, r storage.Replica) (*Store, error) {
	s := &Store{db: e.DB(), e: e, r: r, changed: make(chan struct{})}
	if err := s.load(s.db); err != nil {
		return nil, fmt.Errorf("load controller state of replica %d: %w", r.ID, err)
	}
	return s, nil
}

func (s *Store) load(r pebble.Reader) error {
	progress, err := s.r.ReadProgress(r)
	if err != nil {
		return err
	}
	st := State{now: progress.Now, sessions: map[uint64]*clientSession{}, touchedSessions: map[uint64]bool{}}
	if v, ok, err := storage.Get(r, s.r.StateKey(keyNumShards)); err != nil {
		return err
	} else if ok {
		st.numShards = int(binary.BigEndian.Uint32(v))
	}
	if v, ok, err := storage.Get(r, s.r.StateKey(keyAuth)); err != nil {
		return err
	} else if ok {
		st.auth = &controllerlogpb.AuthImage{}
		if err := proto.Unmarshal(v, st.auth); err != nil {
			return fmt.Errorf("auth state: %w", err)
		}
	}
	if err := s.scan(r, keyConfig, func(v []byte) error {
		var pc controllerpb.Config
		if err := proto.Unmarshal(v, &pc); err != nil {
			return err
		}
		if pc.GetNum() != uint64(len(st.configs)) {
			return fmt.Errorf("configuration %d follows %d", pc.GetNum(), len(st.configs)-1)
		}
		st.configs = append(st.configs, ConfigFromProto(&pc))
		return nil
	}); err != nil {
		return err
	}
	if err := s.scan(r, keySession, func(v []byte) error {
		var rec controllerlogpb.SessionRecord
		if err := proto.Unmarshal(v, &rec); err != nil {
			return err
		}
		st.sessions[rec.GetClientId()] = &clientSession{seq: rec.GetSeq(), lastSeen: rec.GetLastSeen(),
			configNum: rec.GetConfigNum(), err: codeError(rec.GetErrorCode())}
		return nil
	}); err != nil {
		return err
	}
	s.state, s.applied = st, progress.Applied
	return nil
}

// scan calls fn with the value of each key of the given kind, in key order.
func (s *Store) scan(r pebble.Reader, kind byte, fn func(v []byte) error) error {
	lo, hi := s.r.StateSpan(kind)
	return storage.Scan(r, lo, hi, func(_, v []byte) error { return fn(v) })
}

// Applied implements raftnode.StateMachine.
func (s *Store) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Apply implements raftnode.StateMachine: each entry's result is a Result.
func (s *Store) Apply(ents []raftnode.Entry) ([]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	results := make([]any, len(ents))
	last, _ := raftnode.Commands(ents, s.applied, func(i int, e raftnode.Entry) error {
		var cmd controllerlogpb.Command
		if err := proto.Unmarshal(e.Data, &cmd); err != nil {
			results[i] = Result{Err: fmt.Errorf("%w: undecodable command at %d", rpcerr.ErrMalformed, e.Index)}
			return nil
		}
		results[i] = s.state.Apply(&cmd)
		return nil
	})
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.writeChanges(b); err != nil {
		return nil, err
	}
	if err := s.r.WriteProgress(b, storage.Progress{Applied: last, Now: s.state.now}); err != nil {
		return nil, err
	}
	// Not synced: the raft log holds these entries durably, and Pebble's
	// single WAL makes this batch durable no later than any later synced
	// write.
	if err := s.e.Commit(b, false); err != nil {
		return nil, err
	}
	s.applied = last
	return results, nil
}

func (s *Store) writeChanges(b *pebble.Batch) error {
	st := &s.state
	wake := false
	if st.authChanged {
		if err := storage.SetProto(b, s.r.StateKey(keyAuth), st.auth); err != nil {
			return err
		}
		st.authChanged, wake = false, true
	}
	if len(st.newConfigs) > 0 {
		if err := b.Set(s.r.StateKey(keyNumShards), binary.BigEndian.AppendUint32(nil, uint32(st.numShards)), nil); err != nil {
			return err
		}
		for _, n := range st.newConfigs {
			if err := storage.SetProto(b, s.configKey(n), st.configs[n].ToProto()); err != nil {
				return err
			}
		}
		st.newConfigs = st.newConfigs[:0]
		wake = true
	}
	if wake {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	for id := range st.touchedSessions {
		key := s.r.StateKey(binary.BigEndian.AppendUint64([]byte{keySession}, id)...)
		sess, ok := st.sessions[id]
		if !ok {
			if err := b.Delete(key, nil); err != nil {
				return err
			}
			continue
		}
		if err := storage.SetProto(b, key, sessionRecord(id, sess)); err != nil {
			return err
		}
	}
	clear(st.touchedSessions)
	return nil
}

func sessionRecord(id uint64, s *clientSession) *controllerlogpb.SessionRecord {
	return &controllerlogpb.SessionRecord{ClientId: id, Seq: s.seq, LastSeen: s.lastSeen,
		ConfigNum: s.configNum, ErrorCode: errorCode(s.err)}
}

func (s *Store) configKey(n uint64) []byte {
	return s.r.StateKey(binary.BigEndian.AppendUint64([]byte{keyConfig}, n)...)
}

// Snapshot implements raftnode.StateMachine.
func (s *Store) Snapshot() ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	img := &controllerlogpb.Image{Applied: s.applied, NumShards: uint32(s.state.numShards), Now: s.state.now, Auth: s.state.auth}
	for i := range s.state.configs {
		img.Configs = append(img.Configs, s.state.configs[i].ToProto())
	}
	for id, sess := range s.state.sessions {
		img.Sessions = append(img.Sessions, sessionRecord(id, sess))
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(img)
}

// Restore implements raftnode.StateMachine.
func (s *Store) Restore(image []byte) error {
	var img controllerlogpb.Image
	if err := proto.Unmarshal(image, &img); err != nil {
		return fmt.Errorf("decode controller image: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{numShards: int(img.GetNumShards()), now: img.GetNow(), sessions: map[uint64]*clientSession{}, touchedSessions: map[uint64]bool{},
		auth: img.GetAuth(), authChanged: img.GetAuth() != nil}
	for _, pc := range img.GetConfigs() {
		st.configs = append(st.configs, ConfigFromProto(pc))
		st.newConfigs = append(st.newConfigs, pc.GetNum())
	}
	for _, rec := range img.GetSessions() {
		st.sessions[rec.GetClientId()] = &clientSession{seq: rec.GetSeq(), lastSeen: rec.GetLastSeen(),
			configNum: rec.GetConfigNum(), err: codeError(rec.GetErrorCode())}
		st.touchedSessions[rec.GetClientId()] = true
	}
	// writeChanges writes s.state; the old one stays if the image is not
	// stored (the member stops then, but its state must say what is on
	// disk).
	old := s.state
	if err := s.r.ReplaceState(s.e, storage.Progress{Applied: img.GetApplied(), Now: st.now}, func(b *pebble.Batch) error {
		s.state = st
		return s.writeChanges(b)
	}); err != nil {
		s.state = old
		return err
	}
	s.applied = img.GetApplied()
	return nil
}

// Query returns configuration n (the latest for n < 0 or above it), and
// the shard count; ok is false before the controller is initialised.
func (s *Store) Query(n int64) (cfg Config, numShards int, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	cfg, ok = s.state.Query(n)
	return cfg, s.state.numShards, ok
}

// Now returns the replicated time (unix ms) at the applied index.
func (s *Store) Now() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state.now
}

// JoinToCheck returns the groups of join whose replicas a leader checks
// before proposing it (see State.JoinToCheck).
func (s *Store) JoinToCheck(join *controllerpb.JoinRequest) []*controllerpb.Group {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state.JoinToCheck(join)
}

// AuthView returns the public auth state (see State.AuthView).
func (s *Store) AuthView() *controllerpb.AuthStateReply {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state.AuthView()
}

// AuthRevision returns the auth revision and whether auth is enabled.
func (s *Store) AuthRevision() (revision uint64, enabled bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state.AuthRevision(), s.state.AuthEnabled()
}

// UserSecret returns a user's bcrypt hash and epoch (see State.UserSecret).
func (s *Store) UserSecret(name string) (hash []byte, epoch uint64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state.UserSecret(name)
}

// SigningKey returns the token-signing key (see State.SigningKey).
func (s *Store) SigningKey() (ed25519.PrivateKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.state.SigningKey()
}

// Changed returns a channel closed when a configuration is next added or
// the auth state next changes.
func (s *Store) Changed() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}
