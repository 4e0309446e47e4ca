package groupserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/transport"
)

// followerLooks is how many driver ticks a follower lets pass between
// looks at whether it leads: a node hosts followers of many groups, and
// a new leader's drivers starting a few ticks late cost nothing.
const followerLooks = 4

// drive runs the leader's drivers until Stop.
func (s *Server) drive() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if !s.node.Status().IsLeader {
			t.Reset(followerLooks * s.cfg.TickInterval)
			continue
		}
		t.Reset(s.cfg.TickInterval)
		if s.sm.Incarnation() == 0 {
			s.spawn(task{'i', 0, 0}, s.drawIncarnation)
		}
		v := s.sm.View()
		s.cfg.Metrics.shardStates(v)
		moving := false
		for shard, sh := range v.Shards {
			switch sh.State {
			case group.Pulling:
				moving = true
				addrs := v.Prev.Groups[sh.Peer]
				s.spawn(task{'p', v.Config.Num, shard}, func(ctx context.Context) { s.pull(ctx, v.Config.Num, shard, sh.Peer, addrs) })
			case group.Confirming:
				moving = true
				addrs := v.Prev.Groups[sh.Peer]
				s.spawn(task{'d', v.Config.Num, shard}, func(ctx context.Context) { s.confirmDelete(ctx, v.Config.Num, shard, sh.Peer, addrs) })
			case group.Offering:
				moving = true // waits for the new owner's pull and delete
			}
		}
		if known, in := v.Config.Groups[s.cfg.GID]; in {
			if m, ok := s.replicasToSync(); ok {
				s.spawn(task{'r', 0, 0}, func(ctx context.Context) { s.syncReplicas(ctx, known, m) })
			}
		}
		if !moving {
			// Held shards wait for the new owner's pull, or for a
			// configuration that gives them back (nextConfig proposes
			// only a configuration the group can install).
			s.nextConfig(v.Config.Num)
		}
	}
}

// resyncEvery is how often a group whose membership changed checks that
// the controller still names its voters (a stale leader's late update may
// have overwritten them).
const resyncEvery = 30 * time.Second

// replicasToSync returns the group's membership when the controller may
// not know it: a membership change made the voters differ from the
// founding voters (raftnode.Membership.Founders: the voters whose
// addresses the controller got when the group joined, at addresses their
// peers may not know), and they differ from the voters last
// synced, or the last sync is older than resyncEvery. Groups whose
// membership never changed never write their addresses: the controller
// has what they joined with.
func (s *Server) replicasToSync() (raftnode.Membership, bool) {
	if s.cfg.Controller == nil {
		return raftnode.Membership{}, false
	}
	m := s.node.Members()
	if m.Joint || slices.Equal(m.Voters, m.Founders) {
		return m, false
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	return m, !slices.Equal(m.Voters, s.synced) || time.Since(s.syncedAt) > resyncEvery
}

// syncReplicas makes the controller's configuration name the group's
// voters. An address the configuration has is kept when it answers as a
// voter of this group, or, unreachable, is a voter's address; an address
// that answers as anything else is dropped. A voter not covered so is
// added at the address it was added with. An unreachable address that is
// no voter's is dropped only when every founding voter is covered: it may
// be a live voter the leader reaches at another address (proxies, NAT).
// The sync counts as done only when every voter was covered; otherwise
// it is tried again.
func (s *Server) syncReplicas(ctx context.Context, known []string, m raftnode.Membership) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var addrs, unknown []string
	covered := map[uint64]bool{}
	for _, addr := range known {
		ictx, icancel := context.WithTimeout(ctx, time.Second)
		who, err := transport.Identify(ictx, addr, s.cfg.GID, s.identifyDial...)
		icancel()
		var id uint64
		switch {
		case err == nil && who.Group == s.cfg.GID && (who.Incarnation == 0 || who.Incarnation == s.sm.Incarnation()):
			id = who.Replica
		case err == nil:
			continue // another group's replica answers there now, or another copy of this group's id
		default:
			for _, v := range m.Voters {
				if m.Addrs[v] == addr {
					id = v
				}
			}
		}
		switch {
		case id != 0 && m.IsVoter(id) && !covered[id]:
			addrs, covered[id] = append(addrs, addr), true
		case id == 0:
			unknown = append(unknown, addr)
		}
	}
	done, foundingUncovered := true, false
	for _, v := range m.Voters {
		if covered[v] {
			continue
		}
		if slices.Contains(m.Founders, v) {
			foundingUncovered, done = true, false
		} else if a, ok := m.Addrs[v]; ok {
			addrs = append(addrs, a)
		} else {
			done = false
		}
	}
	if foundingUncovered {
		addrs = append(addrs, unknown...) // maybe theirs: keep until told apart
	}
	// Still the leader, with the same voters: a leader deposed meanwhile
	// must not overwrite its successor's update.
	if now := s.node.Members(); !s.node.Status().IsLeader || !slices.Equal(now.Voters, m.Voters) {
		return
	}
	if !slices.Equal(addrs, known) && len(addrs) > 0 {
		if _, err := s.cfg.Controller.SetReplicas(ctx, s.cfg.GID, addrs, s.sm.Incarnation()); err != nil {
			s.log.Warn("tell the controller the group's replicas", "addrs", addrs, "err", err)
			_ = rpc.Sleep(ctx, time.Second) // the next attempt waits; the task stays busy meanwhile
			return
		}
		s.log.Info("the controller has the group's replicas", "addrs", addrs, "voters", m.Voters)
	}
	if !done {
		_ = rpc.Sleep(ctx, time.Second)
		return
	}
	s.syncMu.Lock()
	s.synced, s.syncedAt = m.Voters, time.Now()
	s.syncMu.Unlock()
}

// spawn runs fn for t unless it already runs; fn's context ends on Stop.
func (s *Server) spawn(t task, fn func(context.Context)) {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	if s.busy[t] {
		return
	}
	s.busy[t] = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.busyMu.Lock()
			delete(s.busy, t)
			s.busyMu.Unlock()
		}()
		fn(s.ctx)
	}()
}

// nextConfig proposes configuration cur+1 if the controller has it and the
// group can install it (see group.StateMachine.CanInstall).
func (s *Server) nextConfig(cur uint64) {
	if s.cfg.Controller == nil {
		return
	}
	next := s.next // configurations never change: fetch each once
	if next.Num != cur+1 {
		// The controller client's one long poll, shared by every replica
		// of the process (a node's leaders), learns that something newer
		// exists without loading the controller; the wait is cut at a
		// second so that leadership and shutdown are noticed. Then a
		// linearizable Query fetches exactly cur+1.
		wctx, wcancel := context.WithTimeout(s.ctx, time.Second)
		newer, err := s.cfg.Controller.Newer(wctx, cur)
		wcancel()
		if err != nil || newer <= cur {
			return
		}
		qctx, qcancel := context.WithTimeout(s.ctx, 2*time.Second)
		next, _, err = s.cfg.Controller.Query(qctx, int64(cur+1))
		qcancel()
		if err != nil || next.Num != cur+1 {
			return
		}
		s.next = next
	}
	if !s.sm.CanInstall(next) {
		return // a Held shard that next does not give back
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	err := s.propose(ctx, &grouppb.Command{Op: &grouppb.Command_Install{Install: &grouppb.InstallConfig{Config: next.ToProto()}}})
	switch {
	case errors.Is(err, rpcerr.ErrMalformed):
		s.log.Warn("configuration refused", "num", next.Num, "err", err)
		return
	case err != nil:
		s.log.Debug("propose configuration", "num", next.Num, "err", err)
		return
	}
	gained, lost := 0, 0
	v := s.sm.View()
	for _, sh := range v.Shards {
		switch sh.State {
		case group.Pulling:
			gained++
		case group.Held:
			lost++
		}
	}
	s.log.Info("installed configuration", "num", next.Num, "pulling", gained, "offering", lost, "took", time.Since(start))
}

// drawIncarnation proposes a random incarnation for a group that has
// applied none (see group.StateMachine.Incarnation): its first leader's
// is kept, so that every replica and the controller tell this copy of the
// group id from any other.
func (s *Server) drawIncarnation(ctx context.Context) {
	var inc uint64
	for inc == 0 {
		inc = rand.Uint64()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := s.propose(ctx, &grouppb.Command{Op: &grouppb.Command_SetIncarnation{SetIncarnation: &grouppb.SetIncarnation{Incarnation: inc}}})
	if err != nil {
		s.log.Debug("propose incarnation", "err", err)
		return
	}
	s.log.Info("group incarnation", "incarnation", fmt.Sprintf("%016x", s.sm.Incarnation()))
}

// stillLeading reports whether the driver should go on: the node leads and
// ctx is live.
func (s *Server) stillLeading(ctx context.Context) bool {
	return ctx.Err() == nil && s.node.Status().IsLeader
}

// pull fetches shard from group src (at addrs) at configuration num and
// proposes it chunk by chunk, until it is in or this node stops leading.
func (s *Server) pull(ctx context.Context, num uint64, shard int, src uint64, addrs []string) {
	start := time.Now()
	defer s.pulled.set(shard, -1)
	b := rpc.NewBackoff(20*time.Millisecond, time.Second)
	// Any replica of the source may answer (an offered shard is frozen):
	// start at a random one, so pullers spread and one dead replica does
	// not always cost the first attempt.
	first := rand.IntN(max(len(addrs), 1))
	for attempt := first; s.stillLeading(ctx); attempt++ {
		if len(addrs) == 0 {
			s.log.Error("shard source group has no addresses", "shard", shard, "source", src)
			return
		}
		// A replica that went silent on an earlier pull goes last.
		i := s.suspects.Pick(addrs, attempt%len(addrs), nil)
		done, bytes, err := s.pullFrom(ctx, num, shard, src, addrs[i])
		if done {
			if err == nil {
				s.log.Info("shard arrived", "shard", shard, "config", num, "source", src, "bytes", bytes, "took", time.Since(start))
				s.cfg.Metrics.migrated(bytes, time.Since(start))
			}
			return
		}
		s.log.Debug("pull shard", "shard", shard, "config", num, "from", addrs[i], "addrs", addrs, "err", err)
		if (attempt+1-first)%len(addrs) == 0 {
			_ = rpc.Wait(ctx, b)
		}
	}
}

// chunkTimeout bounds the wait for the next chunk of a pull: a source that
// goes silent (a partition drops its packets) is abandoned for another
// replica instead of being waited on until TCP gives up.
const chunkTimeout = 5 * time.Second

// pullWindow bounds the chunks of one pull that are in the log and not yet
// applied.
const pullWindow = 4

// pullFrom runs one pull attempt against one replica of the source group.
// done is true when nothing more is to be done: the shard is in, or the
// group moved on, or this node cannot propose.
func (s *Server) pullFrom(ctx context.Context, num uint64, shard int, src uint64, addr string) (done bool, bytes int, err error) {
	cl, err := s.handoffClient(addr)
	if err != nil {
		return false, 0, err
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wentSilent atomic.Bool
	silent := time.AfterFunc(chunkTimeout, func() { wentSilent.Store(true); cancel() }) // armed while waiting for a chunk
	defer silent.Stop()
	defer func() {
		if wentSilent.Load() && parent.Err() == nil {
			s.suspects.TimedOut(addr) // the next pull tries another replica first
		}
	}()
	stream, err := cl.PullShard(ctx, &grouppb.PullShardRequest{ConfigNum: num, Shard: uint32(shard), Group: src})
	if err != nil {
		return false, 0, err
	}
	// Up to pullWindow chunks are in the log at once: the next chunk
	// streams in and replicates while the previous ones commit and apply.
	// Raft keeps them in order, and the state machine refuses a chunk out
	// of order anyway.
	var inflight []*raftnode.Pending
	for chunk := uint64(0); ; chunk++ {
		silent.Reset(chunkTimeout)
		c, err := stream.Recv()
		silent.Stop() // not while the chunk replicates
		if err != nil {
			return s.recvFailed(ctx, num, shard, bytes, err)
		}
		if chunk == 0 {
			s.suspects.Answered(addr)
		}
		for _, kv := range c.GetKvs() {
			bytes += len(kv.GetKey()) + len(kv.GetValue())
			s.pulled.set(shard, bytes)
		}
		p, err := s.submit(ctx, &grouppb.Command{Op: &grouppb.Command_Insert{Insert: &grouppb.InsertShard{
			ConfigNum: num, Shard: uint32(shard), Chunk: chunk, Kvs: c.GetKvs(), Sessions: c.GetSessions(), Last: c.GetLast()}}})
		if err != nil {
			return !s.node.Status().IsLeader, bytes, err
		}
		inflight = append(inflight, p)
		keep := pullWindow - 1
		if c.GetLast() {
			keep = 0
		}
		inflight, done, err = s.settle(ctx, inflight, keep)
		if done || err != nil {
			return done, bytes, err
		}
		if c.GetLast() {
			return true, bytes, nil
		}
	}
}

// settle waits for the outcome of the oldest chunks of a pull in
// inflight until at most keep are left, and returns those. done is set,
// with the error, when nothing more is to be done: the shard is in, or
// the group moved on, or this node cannot propose.
func (s *Server) settle(ctx context.Context, inflight []*raftnode.Pending, keep int) (rest []*raftnode.Pending, done bool, err error) {
	for len(inflight) > keep {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		err := outcome(wctx, inflight[0])
		wcancel()
		inflight = inflight[1:]
		switch {
		case errors.Is(err, kvpb.ErrStaleConfig):
			return inflight, true, err // the shard is in, or the configuration passed
		case err != nil:
			return inflight, !s.node.Status().IsLeader, err
		}
	}
	return inflight, false, nil
}

// recvFailed is pullFrom's outcome when its stream failed with err, after
// bytes of the shard arrived.
func (s *Server) recvFailed(ctx context.Context, num uint64, shard, bytes int, err error) (bool, int, error) {
	if err == io.EOF {
		return false, bytes, errors.New("stream ended before the last chunk")
	}
	err = kvpb.Errors.FromStatus(err)
	if errors.Is(err, kvpb.ErrStaleConfig) {
		// The old owner is past num while the shard is still pulled
		// here: a configuration gave it back before any data left (see
		// group.Held). Give the pull up.
		return s.abandon(ctx, num, shard, err)
	}
	return false, bytes, err
}

// abandon proposes giving up the pull of shard at num, which the old owner
// answered with why. Once it is applied the pull is done, with why.
func (s *Server) abandon(ctx context.Context, num uint64, shard int, why error) (done bool, bytes int, err error) {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.propose(pctx, &grouppb.Command{Op: &grouppb.Command_AbandonPull{AbandonPull: &grouppb.PullShardRequest{ConfigNum: num, Shard: uint32(shard)}}}); err != nil {
		return !s.node.Status().IsLeader, 0, err
	}
	s.log.Warn("gave up pulling a shard its old owner took back", "shard", shard, "config", num, "answer", why)
	return true, 0, why
}

// confirmDelete tells the old owner of shard to delete it, then records the
// acknowledgement.
func (s *Server) confirmDelete(ctx context.Context, num uint64, shard int, src uint64, addrs []string) {
	b := rpc.NewBackoff(20*time.Millisecond, time.Second)
	next := 0
	for attempt := 0; s.stillLeading(ctx) && len(addrs) > 0; attempt++ {
		// A stopped leader that the others still name goes last.
		i := s.suspects.Pick(addrs, next%len(addrs), nil)
		addr := addrs[i]
		next = i + 1
		err := s.deleteAt(ctx, addr, src, num, shard)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = s.propose(pctx, &grouppb.Command{Op: &grouppb.Command_ConfirmDelete{ConfirmDelete: &grouppb.ConfirmDelete{ConfigNum: num, Shard: uint32(shard)}}})
			cancel()
			if err == nil {
				s.log.Debug("old owner deleted shard", "shard", shard, "config", num)
				return
			}
		}
		s.log.Debug("delete shard at old owner", "shard", shard, "config", num, "at", addr, "err", err)
		var nl *rpcerr.NotLeaderError
		if errors.As(err, &nl) {
			// The old owner named its leader: go there now, unless it let
			// a call time out lately (the others may name it until they
			// elect another): then on, with the backoff below, so that
			// followers naming a suspect are not asked in a hot loop.
			if i := slices.Index(addrs, nl.Addr); i >= 0 && !s.suspects.Suspected(addrs[i]) {
				next = i
				continue
			}
		}
		if (attempt+1)%len(addrs) == 0 {
			_ = rpc.Wait(ctx, b)
		}
	}
}

func (s *Server) deleteAt(ctx context.Context, addr string, src, num uint64, shard int) error {
	cl, err := s.handoffClient(addr)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = cl.DeleteShard(actx, &grouppb.DeleteShardRequest{ConfigNum: num, Shard: uint32(shard), Group: src})
	s.sawAnswer(ctx, actx, addr, err)
	return kvpb.Errors.FromStatus(err)
}

// sawAnswer records how a handoff call to addr made with actx (derived
// from ctx) ended, for s.suspects.
func (s *Server) sawAnswer(ctx, actx context.Context, addr string, err error) {
	if rpc.AttemptTimedOut(ctx, actx, err) {
		s.suspects.TimedOut(addr)
	} else if err == nil {
		s.suspects.Answered(addr)
	}
}
