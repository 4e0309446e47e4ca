package controller

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
	"github.com/shardkv/shardkv/session"
)

// MaxShards is the largest shard count a cluster may be created with.
const MaxShards = config.MaxShards

// SessionTTL is how long a client session is remembered after its last
// request, by command stamps. A client must not retry one request for
// longer than a fraction of this.
const SessionTTL = 24 * time.Hour

// Config is one numbered configuration (see package config).
type Config = config.Config

// ConfigFromProto converts the wire form back.
func ConfigFromProto(p *controllerpb.Config) Config { return config.FromProto(p) }

type clientSession struct {
	seq       uint64
	lastSeen  int64
	configNum uint64
	err       error
}

// Result is the outcome of one command: the configuration current after it
// (Num 0 when uninitialised), or a refusal.
type Result struct {
	ConfigNum uint64
	Err       error
}

// State is the controller's whole replicated state. The zero value is an
// uninitialised controller.
type State struct {
	numShards int
	configs   []Config
	sessions  map[uint64]*clientSession
	now       int64                      // replicated time, unix ms (session.Advance)
	auth      *controllerlogpb.AuthImage // users, roles, enabled (auth.go); nil: none yet

	// changed records, since the last TakeChanges, what a store must
	// persist: new configurations and touched or expired sessions.
	newConfigs      []uint64
	touchedSessions map[uint64]bool
	authChanged     bool
}

// Now is the replicated time (unix ms) of the last applied command.
func (s *State) Now() int64 { return s.now }

// NumShards is the fixed number of shards, 0 before Init.
func (s *State) NumShards() int { return s.numShards }

// Latest returns the newest configuration; ok is false before Init.
func (s *State) Latest() (Config, bool) {
	if len(s.configs) == 0 {
		return Config{}, false
	}
	return s.configs[len(s.configs)-1], true
}

// Query returns configuration n, or the latest when n is negative or above
// the latest. ok is false before Init. The returned Config shares memory
// with the state: callers must not modify it.
func (s *State) Query(n int64) (Config, bool) {
	if len(s.configs) == 0 {
		return Config{}, false
	}
	if n < 0 || n >= int64(len(s.configs)) {
		return s.configs[len(s.configs)-1], true
	}
	return s.configs[n], true
}

// Apply applies one command and returns its outcome.
func (s *State) Apply(cmd *controllerlogpb.Command) Result {
	if s.sessions == nil {
		s.sessions = make(map[uint64]*clientSession)
		s.touchedSessions = make(map[uint64]bool)
	}
	s.now = session.Advance(s.now, cmd.GetStamp())
	s.expireSessions(s.now)
	if init := cmd.GetInit(); init != nil {
		return s.init(int(init.GetNumShards()))
	}
	if open := cmd.GetOpenSession(); open != nil {
		return s.openSession(open.GetClientId())
	}
	sess := sessionOf(cmd)
	if sess == nil {
		return Result{Err: fmt.Errorf("%w: empty command", rpcerr.ErrMalformed)}
	}
	prev, ok := s.sessions[sess.GetClientId()]
	if sess.GetClientId() != 0 && sess.GetSeq() == 0 {
		return Result{Err: fmt.Errorf("%w: sequence 0 is the session's opening, not a change", rpcerr.ErrStaleRequest)}
	}
	if !ok && sess.GetClientId() != 0 {
		// Never opened, or expired: it may retry a change applied before
		// the session expired (Raft dissertation, section 6.3). Nothing is
		// remembered.
		return Result{Err: fmt.Errorf("%w: client %d sequence %d", rpcerr.ErrSessionExpired, sess.GetClientId(), sess.GetSeq())}
	}
	if ok && sess.GetClientId() != 0 {
		switch {
		case sess.GetSeq() == prev.seq:
			return Result{ConfigNum: prev.configNum, Err: prev.err}
		case sess.GetSeq() < prev.seq:
			return Result{Err: rpcerr.ErrStaleRequest}
		}
	}
	if len(s.configs) == 0 {
		// Not ready is not an outcome: nothing is remembered, so the
		// client's retry is applied once the controller is initialised.
		return Result{Err: controllerpb.ErrNotInitialized}
	}
	var next Config
	var err error
	switch op := cmd.GetOp().(type) {
	case *controllerlogpb.Command_Join:
		if r := cmd.GetRefusal(); r != nil {
			// The leader's check refused it; only an outcome the
			// session already had (above) overrides the verdict.
			err = refusalError(r)
			break
		}
		next, err = s.join(op.Join.GetGroups(), cmd.GetChecked())
	case *controllerlogpb.Command_Leave:
		next, err = s.leave(op.Leave.GetGids(), op.Leave.GetForce())
	case *controllerlogpb.Command_Move:
		next, err = s.move(int(op.Move.GetShard()), op.Move.GetGid())
	case *controllerlogpb.Command_SetReplicas:
		if r := cmd.GetRefusal(); r != nil {
			err = refusalError(r)
			break
		}
		next, err = s.setReplicas(op.SetReplicas.GetGid(), op.SetReplicas.GetAddrs(), op.SetReplicas.GetIncarnation())
	case *controllerlogpb.Command_Auth:
		// The configuration stays; commit appends nothing.
		next, err = s.configs[len(s.configs)-1], s.applyAuth(op.Auth)
	}
	res := s.commit(next, err)
	if id := sess.GetClientId(); id != 0 {
		s.sessions[id] = &clientSession{seq: sess.GetSeq(), lastSeen: s.now, configNum: res.ConfigNum, err: res.Err}
		s.touchedSessions[id] = true
	}
	return res
}

// refusalError is the outcome of a change the leader refused (see
// Command.refusal).
func refusalError(r *controllerlogpb.CheckRefusal) error {
	switch e := codeError(r.GetCode()); e {
	case controllerpb.ErrBadReplica, controllerpb.ErrReplicaUnreachable, controllerpb.ErrGroupNotReady:
		return fmt.Errorf("%w: %s", e, r.GetReason())
	}
	return fmt.Errorf("%w: refusal code %d", rpcerr.ErrMalformed, r.GetCode())
}

// JoinToCheck returns the groups of join that the latest configuration
// lacks: those whose replicas a controller leader checks before proposing
// it (package ctlserver). It returns none when applying join now would add
// no group: the state machine would refuse it (a session it does not know,
// a malformed group, a group joined with other addresses, no
// configuration yet), or its session already has the request's outcome (a
// retry, answered from the session whatever a check would say).
func (s *State) JoinToCheck(join *controllerpb.JoinRequest) []*controllerpb.Group {
	if len(s.configs) == 0 {
		return nil
	}
	if sess := join.GetSession(); sess.GetClientId() != 0 {
		prev, ok := s.sessions[sess.GetClientId()]
		if !ok || sess.GetSeq() == 0 || sess.GetSeq() <= prev.seq {
			return nil
		}
	}
	if _, err := s.join(join.GetGroups(), false); err != nil {
		return nil
	}
	latest := s.configs[len(s.configs)-1]
	var out []*controllerpb.Group
	for _, g := range join.GetGroups() {
		if _, ok := latest.Groups[g.GetId()]; !ok {
			out = append(out, g)
		}
	}
	return out
}

// sessionOf returns the session of a change command (nil for others).
func sessionOf(cmd *controllerlogpb.Command) *controllerpb.Session {
	switch op := cmd.GetOp().(type) {
	case *controllerlogpb.Command_Join:
		return op.Join.GetSession()
	case *controllerlogpb.Command_Leave:
		return op.Leave.GetSession()
	case *controllerlogpb.Command_Move:
		return op.Move.GetSession()
	case *controllerlogpb.Command_SetReplicas:
		return op.SetReplicas.GetSession()
	case *controllerlogpb.Command_Auth:
		return op.Auth.GetChange().GetSession()
	}
	return nil
}

// openSession registers client (sequence 0) unless it is known already:
// opening is idempotent and never resets a session in use.
func (s *State) openSession(client uint64) Result {
	latest := uint64(0)
	if n := len(s.configs); n > 0 {
		latest = s.configs[n-1].Num
	}
	if client == 0 {
		return Result{ConfigNum: latest, Err: fmt.Errorf("%w: a session needs a client id", controllerpb.ErrInvalidGroup)}
	}
	if _, ok := s.sessions[client]; !ok {
		s.sessions[client] = &clientSession{lastSeen: s.now, configNum: latest}
		s.touchedSessions[client] = true
	}
	return Result{ConfigNum: latest}
}

// commit appends next as a new configuration if it differs from the latest.
func (s *State) commit(next Config, err error) Result {
	latest := s.configs[len(s.configs)-1]
	if err != nil {
		return Result{ConfigNum: latest.Num, Err: err}
	}
	if slices.Equal(next.Shards, latest.Shards) && maps.EqualFunc(next.Groups, latest.Groups, slices.Equal) {
		return Result{ConfigNum: latest.Num}
	}
	next.Num = latest.Num + 1
	s.configs = append(s.configs, next)
	s.newConfigs = append(s.newConfigs, next.Num)
	return Result{ConfigNum: next.Num}
}

func (s *State) init(numShards int) Result {
	if len(s.configs) > 0 {
		return Result{ConfigNum: s.configs[len(s.configs)-1].Num}
	}
	if numShards < 1 || numShards > MaxShards {
		return Result{Err: controllerpb.ErrInvalidShards}
	}
	s.numShards = numShards
	s.configs = []Config{{Num: 0, Shards: make([]uint64, numShards), Groups: map[uint64][]string{}}}
	s.newConfigs = append(s.newConfigs, 0)
	return Result{}
}

// join adds groups. checked says the leader checked every group it adds
// and gave each the incarnation its replicas state (Command.checked).
func (s *State) join(groups []*controllerpb.Group, checked bool) (Config, error) {
	next := s.configs[len(s.configs)-1].Clone()
	// The request's shape first, for every group: a join refused for it
	// (GROUP_EXISTS, say) says so, not that another group was unchecked
	// (the leader checks nothing of a join it finds malformed).
	seen := map[uint64]bool{}
	for _, g := range groups {
		id, addrs := g.GetId(), g.GetAddrs()
		switch {
		case id == 0:
			return Config{}, fmt.Errorf("%w: group id 0 is reserved", controllerpb.ErrInvalidGroup)
		case len(addrs) == 0:
			return Config{}, fmt.Errorf("%w: group %d has no addresses", controllerpb.ErrInvalidGroup, id)
		case seen[id]:
			return Config{}, fmt.Errorf("%w: group %d appears twice", controllerpb.ErrInvalidGroup, id)
		}
		for _, a := range addrs {
			if a == "" {
				return Config{}, fmt.Errorf("%w: group %d has an empty address", controllerpb.ErrInvalidGroup, id)
			}
		}
		seen[id] = true
		old, ok := next.Groups[id]
		switch {
		case ok && !slices.Equal(old, addrs):
			return Config{}, fmt.Errorf("%w: group %d is %v, not %v", controllerpb.ErrGroupExists, id, old, addrs)
		case ok && g.GetIncarnation() != 0 && next.Foreign(id, g.GetIncarnation()):
			return Config{}, fmt.Errorf("%w: group %d is incarnation %016x, not %016x", controllerpb.ErrGroupExists,
				id, next.Incarnations[id], g.GetIncarnation())
		}
	}
	for _, g := range groups {
		id, addrs := g.GetId(), g.GetAddrs()
		_, ok := next.Groups[id]
		switch {
		case ok:
			continue // joined already: its incarnation stays
		case checked && g.GetIncarnation() == 0:
			return Config{}, fmt.Errorf("%w: group %d was in the configuration when the join was checked (so it was not checked), and has left since; join it again",
				controllerpb.ErrGroupNotReady, id)
		case checked && g.GetIncarnation() != 0 && s.usedWithoutIncarnation(id):
			return Config{}, fmt.Errorf("%w: group id %d was used without an incarnation (before incarnations existed, or joined unchecked): "+
				"another copy of it could not be told apart; give the new group another id", controllerpb.ErrGroupExists, id)
		}
		next.Groups[id] = slices.Clone(addrs)
		if inc := g.GetIncarnation(); inc != 0 {
			if next.Incarnations == nil {
				next.Incarnations = map[uint64]uint64{}
			}
			next.Incarnations[id] = inc
		}
	}
	next.Shards = Rebalance(next.Shards, next.GroupIDs())
	return next, nil
}

// usedWithoutIncarnation reports whether a configuration has group id
// without an incarnation: a copy of the id from then installs every such
// configuration as its own (config.Config.Foreign), so a copy with an
// incarnation could not be told from it.
func (s *State) usedWithoutIncarnation(id uint64) bool {
	for _, c := range s.configs {
		if _, ok := c.Groups[id]; ok && c.Incarnations[id] == 0 {
			return true
		}
	}
	return false
}

// leave removes groups gids. A leaving group's shards that it gained in the
// latest configuration go back to the group that owned them before, when
// that group stays: it may still hold them, frozen for a handoff the
// leaving group never started (it may be dead), and it takes them back
// without one (see package group, "Giving a shard back"). The leaving
// groups' other shards are rebalanced as usual.
func (s *State) leave(gids []uint64, force bool) (Config, error) {
	latest := s.configs[len(s.configs)-1]
	next := latest.Clone()
	leaving := map[uint64]bool{}
	for _, g := range gids {
		if _, ok := next.Groups[g]; !ok {
			return Config{}, fmt.Errorf("%w: %d", controllerpb.ErrUnknownGroup, g)
		}
		delete(next.Groups, g)
		delete(next.Incarnations, g)
		leaving[g] = true
	}
	if len(next.Groups) == 0 && len(gids) > 0 && !force {
		return Config{}, controllerpb.ErrWouldOrphan
	}
	var pinned []bool
	if n := len(s.configs); n > 1 && len(leaving) > 0 {
		prev := s.configs[n-2]
		pinned = make([]bool, len(next.Shards))
		for sh, g := range latest.Shards {
			from := prev.Shards[sh]
			if _, stays := next.Groups[from]; leaving[g] && stays {
				next.Shards[sh], pinned[sh] = from, true
			}
		}
	}
	next.Shards = rebalance(next.Shards, next.GroupIDs(), pinned)
	return next, nil
}

func (s *State) move(shard int, gid uint64) (Config, error) {
	next := s.configs[len(s.configs)-1].Clone()
	if shard < 0 || shard >= len(next.Shards) {
		return Config{}, fmt.Errorf("%w: %d (the cluster has %d)", controllerpb.ErrUnknownShard, shard, len(next.Shards))
	}
	if _, ok := next.Groups[gid]; !ok {
		return Config{}, fmt.Errorf("%w: %d", controllerpb.ErrUnknownGroup, gid)
	}
	next.Shards[shard] = gid
	return next, nil
}

// setReplicas gives group gid the replica addresses addrs (its membership
// changed); the shards stay. Setting the addresses it has changes nothing.
// A group naming its incarnation is refused by a configuration recording
// another one for gid.
func (s *State) setReplicas(gid uint64, addrs []string, incarnation uint64) (Config, error) {
	latest := s.configs[len(s.configs)-1]
	old, ok := latest.Groups[gid]
	switch {
	case !ok:
		return Config{}, fmt.Errorf("%w: %d", controllerpb.ErrUnknownGroup, gid)
	case incarnation != 0 && latest.Foreign(gid, incarnation):
		return Config{}, fmt.Errorf("%w: group %d of the configuration is incarnation %016x, not %016x (another copy of the id)",
			controllerpb.ErrUnknownGroup, gid, latest.Incarnations[gid], incarnation)
	case len(addrs) == 0 || slices.Contains(addrs, ""):
		return Config{}, fmt.Errorf("%w: group %d needs its replicas' addresses", controllerpb.ErrInvalidGroup, gid)
	case slices.Equal(old, addrs):
		return latest.Clone(), nil // nothing to change
	}
	next := latest.Clone()
	next.Groups[gid] = slices.Clone(addrs)
	return next, nil
}

func (s *State) expireSessions(now int64) {
	cutoff := now - SessionTTL.Milliseconds()
	for id, sess := range s.sessions {
		if sess.lastSeen < cutoff {
			delete(s.sessions, id)
			s.touchedSessions[id] = true
		}
	}
}
