package group

import (
	"fmt"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller"
)

// Two copies of one group id can exist: a group that left keeps running on
// its replicas, and its id may be given to a group created again on other
// nodes; a create that recorded some founders and was retried with others
// leaves a partial copy. Both copies would act on every configuration that
// names the id — pull the shards given to it, serve them — and lose
// acknowledged writes. The group's incarnation tells them apart without
// asking the network: the first leader of a group draws a random number
// and proposes it (SetIncarnation), every replica applies the first one
// and keeps it, and the controller records it with the group when the
// group joins (it reads it from the replicas in its join check). A copy
// whose incarnation is not the one a configuration records installs that
// configuration as if its id were not in it. The verdict is a function of
// the log, so every replica of a copy reaches the same one; and because an
// id joins again only after a configuration without it, a copy never owns
// shards in the configuration before one that is not its own.

// Incarnation is the group's incarnation as applied, 0 until its first
// leader's SetIncarnation is.
func (sm *StateMachine) Incarnation() uint64 {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.meta.incarnation
}

// setIncarnation records the group's incarnation, if it has none: the first
// applied is the group's for good, and a later one changes nothing.
func (sm *StateMachine) setIncarnation(a *apply, inc uint64) (outcome error) {
	switch {
	case inc == 0:
		return fmt.Errorf("%w: incarnation 0", rpcerr.ErrMalformed)
	case sm.meta.incarnation == 0:
		sm.meta.incarnation = inc
		a.metaChanged = true
	}
	return nil
}

// ownConfig is next as this copy of the group installs it: next itself,
// or, when next records another incarnation of the group's id, next
// without the id. A copy that owns a shard at its configuration (serving,
// pulling, confirming, restoring it) never gets such a configuration from
// a controller (the id would have had to leave first); it refuses one
// (the outcome), rather than drop or abandon the shard. Shards it lost
// and still hands over (held, offering) block the install as usual.
func (sm *StateMachine) ownConfig(next controller.Config) (controller.Config, error) {
	if !next.Foreign(sm.gid, sm.meta.incarnation) {
		return next, nil
	}
	for s, m := range sm.meta.shards {
		if m.state != Absent && m.state != Held && m.state != Offering {
			return controller.Config{}, fmt.Errorf("%w: configuration %d records group %d as incarnation %016x, "+
				"this copy is %016x and owns shard %d (%v)", rpcerr.ErrMalformed, next.Num, sm.gid, next.Incarnation(sm.gid), sm.meta.incarnation, s, m.state)
		}
	}
	return next.Without(sm.gid), nil
}
