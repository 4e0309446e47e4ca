package nemesis

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/faultproxy"
	"github.com/shardkv/shardkv/internal/memberclient"
	"github.com/shardkv/shardkv/internal/rpc"
)

// The replace-under-faults scenario replaces a dead machine as the README
// says ("Replacing a dead machine"), first in a replica group, then in the
// controller, while clients run, with faults during each membership
// change. Each replacement (a phase):
//
//  1. kill -9 a replica (chosen by the seed) and delete its data for good;
//  2. ADD_LEARNER a new replica (the next id, a new address: its inbound
//     proxy) through the group's Membership service, following NOT_LEADER;
//     the leader is killed with kill -9 a few milliseconds after the change
//     is sent (the group, down to two live voters, has no quorum until it
//     restarts), and the change is retried until the leader lists the
//     new member (an unknown outcome is learnt by listing);
//  3. start it on empty data with --initial-cluster-state existing;
//  4. REPLACE the dead voter by it, retrying while it is behind or another
//     change is in progress, with one partition (by proxies):
//     - the learner: everything sent to it (its inbound proxy, which is how
//     its peers and clients reach it) is cut from before it starts, so
//     the first REPLACE attempts are refused (behind); once healed and
//     caught up, the leader is killed with kill -9 during the REPLACE;
//     - or a voter: the other live voter is cut off (Isolate: its link
//     proxies both ways and its inbound proxy) as the REPLACE is sent,
//     so the joint configuration cannot commit, and the leader is killed
//     with kill -9 during it; the partition outlasts the leader's
//     restart;
//     the group's phase draws one of the two and the controller's the
//     other, so every run has both;
//  5. forget the dead replica; for a group, wait for the controller's
//     configuration to list the new replica (the group's leader tells it);
//     for the controller, the client-facing controller list changes
//     (workload clients reconnect, servers get the new --controllers from
//     their next start; running ones keep the old list, as the README
//     warns).
//
// Faults on the new replica's links: every member and client reaches it at
// its inbound proxy, so cutting that proxy cuts everything sent to it.
// What it sends goes first through its own proxies (its --peers), then to
// the addresses in the first raft snapshot it installs: the leader's own
// view of the group (the leader itself directly, the others through the
// leader's link proxies), which the scenario logs. Proxy faults on its
// outgoing traffic are therefore not relied on.
//
// The schedule (group, dead replica, delays, which phase cuts what) comes
// from the seed; which replica leads, and whether a kill lands before or
// after the change commits, are the cluster's timing. A phase that has
// started is finished (without further faults) even after the run's
// fault period ends, within a minute, so the run ends with a known
// membership; the controller's phase starts only if time is left.
//
// On nodes (Options.Nodes) the group's phase replaces a whole node
// instead (replaceNode): the machine that died hosted one replica of every
// group. The seed draws the group's phase all the same, so that the
// controller's is the one it draws without nodes.
func replaceUnderFaults(ctx context.Context, e *Env) {
	groupCutsLearner := e.Rng.IntN(2) == 0
	phases := []*replacement{e.newReplacement(e.randomGroup(), groupCutsLearner), e.newReplacement(0, !groupCutsLearner)}
	if e.C.Nodes() {
		if !e.replaceNode(ctx) {
			e.Fail(errors.New("the dead node's replacement was not finished (see the log)"))
			return
		}
		phases = phases[1:]
		_ = rpc.Sleep(ctx, time.Second)
	}
	for _, p := range phases {
		if ctx.Err() != nil {
			e.Logf("%s: no time left for its replacement", p.name)
			return
		}
		if !p.run(ctx) {
			e.Fail(fmt.Errorf("%s: the replacement was not finished (see the log)", p.name))
			return
		}
		_ = rpc.Sleep(ctx, time.Second)
	}
}

// replacement is one phase of replace-under-faults, its random choices
// drawn when it is made.
type replacement struct {
	e          *Env
	g          uint64
	name       string
	dead       Replica
	cutLearner bool          // the partition: the learner, else a voter during REPLACE
	cut        time.Duration // how long the partition lasts
	addKill    time.Duration // from sending ADD_LEARNER to kill -9 of the leader
	addDown    time.Duration // how long that leader stays down
	repKill    time.Duration // from sending REPLACE to kill -9 of the leader
	repDown    time.Duration
}

func (e *Env) newReplacement(g uint64, cutLearner bool) *replacement {
	name := fmt.Sprintf("group %d", g)
	if g == 0 {
		name = "controller"
	}
	ids := e.C.ids(g)
	ms := func(lo, n int) time.Duration { return time.Duration(lo+e.Rng.IntN(n)) * time.Millisecond }
	p := &replacement{e: e, g: g, name: name, dead: Replica{Group: g, ID: ids[e.Rng.IntN(len(ids))]}, cutLearner: cutLearner}
	// A change commits within milliseconds here: the kill follows the
	// change's sending closely to land while it is in flight.
	p.addKill, p.addDown = ms(0, 8), ms(700, 600)
	p.repKill, p.repDown = ms(0, 8), ms(700, 600)
	p.cut = ms(1500, 1000)
	if !cutLearner {
		p.cut += p.repKill + p.repDown // the voter's partition outlasts the leader's restart
	}
	return p
}

func (p *replacement) logf(format string, args ...any) {
	p.e.Logf("%s: %s", p.name, fmt.Sprintf(format, args...))
}

// run makes the phase; false if it could not be finished.
func (p *replacement) run(ctx context.Context) bool {
	c := p.e.C
	// What is started is finished even after ctx ends (without faults).
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()

	p.logf("kill -9 %s and delete its data for good", p.dead)
	if err := c.Lose(p.dead); err != nil {
		p.logf("delete %s's data: %v", p.dead, err)
	}
	_ = rpc.Sleep(ctx, time.Second)

	n, addr, err := c.NewReplica(p.g)
	if err != nil {
		p.logf("new replica: %v", err)
		return false
	}
	p.logf("add %s at %s (its inbound proxy) as a learner; kill -9 the leader %v after sending the change, down %v",
		n, addr, p.addKill, p.addDown)
	added, ok := p.change(ctx, mctx, &memberpb.ChangeRequest{Group: p.g, Kind: memberpb.ChangeKind_CHANGE_KIND_ADD_LEARNER, Id: n.ID, Addr: addr},
		func(l *memberpb.ListReply) bool { return role(l, n.ID) != memberpb.Role_ROLE_UNSPECIFIED },
		func(*memberpb.ListReply) bool { return true },
		func(lead Replica) func() { return p.killLeader(ctx, lead, p.addKill, p.addDown) })
	if !ok {
		return false
	}

	healed := func() {}
	if p.cutLearner && ctx.Err() == nil {
		p.logf("cut everything sent to %s (its inbound proxy) for %v, from before it starts: it cannot catch up", n, p.cut)
		c.Inbound(n).Set(faultproxy.Faults{Blackhole: true})
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = rpc.Sleep(ctx, p.cut)
			p.logf("heal the network (%s reachable again)", n)
			p.e.healNetwork() // measured: the group kept its quorum
		}()
		healed = func() { <-done }
	}
	defer healed()
	p.logf("start %s on empty data with --initial-cluster-state existing", n)
	if err := c.StartAdded(n, added); err != nil {
		p.logf("start %s: %v", n, err)
		return false
	}
	if !p.waitServing(mctx, n) {
		return false
	}

	var fault func(Replica) func()
	if p.cutLearner {
		p.logf("replace %s by %s, retrying while it is behind; once it caught up, kill -9 the leader %v after sending the change, down %v",
			p.dead, n, p.repKill, p.repDown)
		fault = func(lead Replica) func() { return p.killLeader(ctx, lead, p.repKill, p.repDown) }
	} else {
		p.logf("replace %s by %s once it caught up; as the change is sent, cut the other live voter off for %v and kill -9 the leader %v after sending it, down %v",
			p.dead, n, p.cut, p.repKill, p.repDown)
		fault = func(lead Replica) func() { return p.cutVoterAndKill(ctx, lead, n) }
	}
	replaced, ok := p.change(ctx, mctx, &memberpb.ChangeRequest{Group: p.g, Kind: memberpb.ChangeKind_CHANGE_KIND_REPLACE, Id: n.ID, Old: p.dead.ID},
		func(l *memberpb.ListReply) bool {
			return !l.GetJoint() && role(l, n.ID) == memberpb.Role_ROLE_VOTER && role(l, p.dead.ID) == memberpb.Role_ROLE_UNSPECIFIED
		},
		func(l *memberpb.ListReply) bool { return caughtUp(l, n.ID) },
		fault)
	if !ok {
		return false
	}
	healed()
	c.RetireReplica(p.dead)
	p.logf("voters now %v", voters(replaced))
	p.logRoutes(mctx, n)
	if p.g == 0 {
		c.UseControllers()
		p.logf("clients reconnect to the controllers in service %v; servers get them as --controllers from their next start", c.Addrs(0))
		return true
	}
	return p.waitConfig(mctx, addr)
}

// replaceNode replaces a dead node as the README says ("Replacing a dead
// machine", on nodes), while clients run:
//
//  1. kill -9 a node (the seed draws it) and delete its data for good:
//     every group loses one of its three replicas;
//  2. start a new node on empty data, hosting nothing;
//  3. for every group in turn: ADD_LEARNER a new replica (the next id) at
//     the new node's address, ask the node to host it (memberpb.Node.Host,
//     what `shardkv admin member add` does), REPLACE the dead replica by
//     it once it caught up, and wait for the controller's configuration
//     to list it; for one group (the seed draws it) the new node is
//     killed with kill -9 and restarted right after it hosts the learner,
//     while the learner catches up;
//  4. kill -9 the new node and restart it with the flags it started with
//     (naming no replica): it serves every replica it was given, from
//     what it recorded.
//
// Faults during the changes, one group each (the seed draws which): the
// leader's node is killed with kill -9 a few milliseconds after the
// ADD_LEARNER is sent (no group still on the two founding nodes alone has
// a quorum until it restarts); and as a REPLACE is sent, the other
// founding node is cut off (Isolate: its proxies; the new node reaches it
// and is reached directly, so groups already moved keep a quorum) and the
// leader's node killed, so that joint configuration, which needs the cut
// node in its old half, cannot commit until the partition heals. As for a replica, what is started is finished
// without faults after the run's fault period ends, within two minutes.
func (e *Env) replaceNode(ctx context.Context) bool {
	c := e.C
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	victim := Replica{Group: 1, ID: c.ids(1)[e.Rng.IntN(len(c.ids(1)))]}
	addFault, repFault, crashGroup := e.randomGroup(), e.randomGroup(), e.randomGroup()
	phases := map[uint64]*replacement{}
	for g := uint64(1); g <= uint64(c.Groups()); g++ {
		phases[g] = e.newReplacement(g, false)
	}
	e.Logf("node: kill -9 %s and delete its data for good", c.Process(victim))
	lost, err := c.LoseNode(victim)
	if err != nil {
		e.Logf("node: delete its data: %v", err)
	}
	_ = rpc.Sleep(ctx, time.Second)
	addr, err := c.NewNode()
	if err != nil {
		e.Logf("node: start a new node: %v", err)
		return false
	}
	e.Logf("node: a new node at %s, hosting nothing yet", addr)
	var hosted []Replica
	for g := uint64(1); g <= uint64(c.Groups()); g++ {
		p := phases[g]
		p.dead = lost[g]
		n, ok := p.addOnNode(ctx, mctx, addr, g == addFault)
		if !ok {
			return false
		}
		if g == crashGroup && ctx.Err() == nil {
			// A joiner that crashes while it catches up (acknowledging
			// entries, or installing a snapshot) restarts on what it
			// recorded: the node starts it again as the learner it is.
			p.logf("kill -9 the new node while %s catches up, down %v", n, p.addDown)
			e.killAndRestart(ctx, n, p.addDown)
		}
		if !p.replaceOnNode(ctx, mctx, n, addr, g == repFault) {
			return false
		}
		hosted = append(hosted, n)
	}
	// Its flags name nothing: what it hosts after a restart is what Host
	// recorded in its data. A check, not a fault: made even after the
	// fault period.
	e.Logf("node: the new node restarts with the flags it started with (hosting nothing named)")
	e.killAndRestart(mctx, hosted[0], 500*time.Millisecond)
	e.checkServing(mctx, hosted)
	return true
}

// addOnNode adds the group's next replica at the new node (addr) as a
// learner, and asks the node to host it; with fault, the leader's node is
// killed after the change is sent. It returns the replica, or false if it
// could not be added.
func (p *replacement) addOnNode(ctx, mctx context.Context, addr string, fault bool) (Replica, bool) {
	n := p.e.C.ReserveOnNode(p.g)
	var kill func(Replica) func()
	if fault {
		p.logf("add %s at the new node (%s) as a learner; kill -9 the leader's node %v after sending the change, down %v",
			n, addr, p.addKill, p.addDown)
		kill = func(lead Replica) func() { return p.killLeader(ctx, lead, p.addKill, p.addDown) }
	} else {
		p.logf("add %s at the new node (%s) as a learner", n, addr)
	}
	added, ok := p.change(ctx, mctx, &memberpb.ChangeRequest{Group: p.g, Kind: memberpb.ChangeKind_CHANGE_KIND_ADD_LEARNER, Id: n.ID, Addr: addr},
		func(l *memberpb.ListReply) bool { return role(l, n.ID) != memberpb.Role_ROLE_UNSPECIFIED },
		func(*memberpb.ListReply) bool { return true }, kill)
	if !ok || !p.host(mctx, n, addr, added) {
		return n, false
	}
	return n, true
}

// replaceOnNode replaces the dead replica by n, at the new node (addr),
// once n caught up, and waits for the controller's configuration to list
// it; with fault, the other founding node is cut off and the leader's node
// killed as the change is sent. False if it could not be finished.
func (p *replacement) replaceOnNode(ctx, mctx context.Context, n Replica, addr string, fault bool) bool {
	var cut func(Replica) func()
	if fault {
		p.logf("replace %s by %s once it caught up; as the change is sent, cut the other founding node off for %v and kill -9 the leader's node %v after sending it, down %v",
			p.dead, n, p.cut, p.repKill, p.repDown)
		cut = func(lead Replica) func() { return p.cutVoterAndKill(ctx, lead, n) }
	} else {
		p.logf("replace %s by %s once it caught up", p.dead, n)
	}
	replaced, ok := p.change(ctx, mctx, &memberpb.ChangeRequest{Group: p.g, Kind: memberpb.ChangeKind_CHANGE_KIND_REPLACE, Id: n.ID, Old: p.dead.ID},
		func(l *memberpb.ListReply) bool {
			return !l.GetJoint() && role(l, n.ID) == memberpb.Role_ROLE_VOTER && role(l, p.dead.ID) == memberpb.Role_ROLE_UNSPECIFIED
		},
		func(l *memberpb.ListReply) bool { return caughtUp(l, n.ID) }, cut)
	if !ok {
		return false
	}
	p.e.C.RetireReplica(p.dead)
	p.logf("voters now %v", voters(replaced))
	return p.waitConfig(mctx, addr)
}

// checkServing checks that every replica of hosted serves again after its
// node's restart (within ctx), and fails the run if one does not.
func (e *Env) checkServing(ctx context.Context, hosted []Replica) {
	for _, r := range hosted {
		for {
			if _, err := e.C.status(ctx, r); err == nil {
				break
			} else if ctx.Err() != nil {
				e.Fail(fmt.Errorf("%s does not serve after its node's restart: %w", r, err))
				return // reported
			}
			_ = rpc.Sleep(ctx, 100*time.Millisecond)
		}
	}
	e.Logf("node: the new node serves %v again", hosted)
}

// host asks the new node at addr to host learner n (HostAdded) until it
// does (within ctx), retrying whatever it answers: no leader reachable to
// confirm the learner, a node still starting.
func (p *replacement) host(ctx context.Context, n Replica, addr string, added *memberpb.ListReply) bool {
	start := time.Now()
	seen := map[string]int{}
	for {
		err := p.e.C.HostAdded(ctx, n, addr, added)
		if err == nil {
			p.logf("the new node hosts %s (%v%s)", n, time.Since(start).Round(time.Millisecond), tally(seen))
			return true
		}
		kind := outcome(err)
		if seen[kind] == 0 {
			p.logf("host %s: %s: %v", n, kind, err)
		}
		seen[kind]++
		if rpc.Sleep(ctx, 200*time.Millisecond) != nil {
			p.logf("the new node did not host %s within two minutes (last error: %v)", n, err)
			return false
		}
	}
}

// change makes req: it lists the members at the leader and sends req until
// done holds (an unknown outcome is learnt by listing again), retrying
// refusals that pass (a learner behind, a change in progress, no leader,
// the leader unreachable). Before the first attempt that ready allows, and
// only while ctx lasts, fault starts, given the leader; what it returns is
// waited for before change returns. It gives up when mctx ends.
func (p *replacement) change(ctx, mctx context.Context, req *memberpb.ChangeRequest,
	done, ready func(*memberpb.ListReply) bool, fault func(lead Replica) func()) (*memberpb.ListReply, bool) {
	what := strings.ToLower(strings.TrimPrefix(req.GetKind().String(), "CHANGE_KIND_"))
	var wait func()
	defer func() {
		if wait != nil {
			wait()
		}
	}()
	seen := map[string]int{}
	attempts := 0
	start := time.Now()
	var last error
	for {
		l, err := p.e.C.ListMembers(mctx, p.g)
		if err == nil && done(l) {
			if wait == nil && fault != nil && ctx.Err() == nil {
				seen["done before its fault was due"]++
			}
			p.logf("%s done: %d attempts in %v%s", what, attempts, time.Since(start).Round(time.Millisecond), tally(seen))
			return l, true
		}
		if mctx.Err() != nil {
			p.logf("%s not done within a minute (last error: %v)", what, last)
			return nil, false
		}
		armed := false
		if err == nil && wait == nil && fault != nil && ctx.Err() == nil && ready(l) {
			wait, armed = fault(Replica{Group: p.g, ID: l.GetHeader().GetReplica()}), true
		}
		attempts++
		_, err = p.e.C.ChangeMembers(mctx, req)
		kind := "answered: applied"
		if err != nil {
			last, kind = err, outcome(err)
		}
		switch {
		case armed && err == nil:
			p.logf("%s: the attempt under the fault was answered (applied) before the fault stopped it", what)
		case armed:
			p.logf("%s: the attempt under the fault: %s: %v", what, kind, err)
		case err != nil && seen[kind] == 0:
			p.logf("%s: %s: %v", what, kind, err)
		}
		seen[kind]++
		if err != nil {
			_ = rpc.Sleep(mctx, 200*time.Millisecond)
		}
	}
}

// killLeader kills lead with SIGKILL after a delay and restarts it after
// down (at once if ctx ends meanwhile); it returns what waits for the
// restart. Nothing happens if ctx ends before the kill.
func (p *replacement) killLeader(ctx context.Context, lead Replica, after, down time.Duration) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if rpc.Sleep(ctx, after) != nil {
			return
		}
		p.logf("kill -9 leader %s", p.e.C.Process(lead))
		p.e.C.Kill(lead)
		_ = rpc.Sleep(ctx, down)
		p.logf("restart %s", lead)
		if err := p.e.C.Restart(lead); err != nil {
			p.logf("restart %s: %v", lead, err)
		}
	}()
	return func() { <-done }
}

// cutVoterAndKill isolates the live voter other than lead and the learner
// n at once, kills lead, and heals after p.cut (not measured: the group
// had no quorum).
func (p *replacement) cutVoterAndKill(ctx context.Context, lead, n Replica) func() {
	var f Replica
	for _, id := range p.e.C.ids(p.g) {
		if id != lead.ID && id != n.ID {
			f = Replica{Group: p.g, ID: id}
		}
	}
	if f == (Replica{}) {
		return p.killLeader(ctx, lead, p.repKill, p.repDown)
	}
	p.logf("isolate voter %s (the change cannot commit without it)", p.e.C.Process(f))
	p.e.C.Isolate(f)
	kill := p.killLeader(ctx, lead, p.repKill, p.repDown)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rpc.Sleep(ctx, p.cut)
		kill()
		p.logf("heal the network (%s reachable again; not measured: the group had no quorum)", f)
		healNetwork(p.e.C)
	}()
	return func() { <-done }
}

// waitServing waits until n answers its Membership service. A process
// that exits at start is started again (a few times), as an operator
// would: a new replica started while its group has no leader is refused
// (cmd/shardkv's addedAsLearner asks its peers once, and takes no leader
// for "not added").
func (p *replacement) waitServing(ctx context.Context, n Replica) bool {
	start := time.Now()
	for exits := 0; ctx.Err() == nil; {
		if _, err := p.e.C.listAt(ctx, p.e.C.listenAddr(n), p.g, 500*time.Millisecond); err == nil {
			p.logf("%s serves (%v after its first start)", n, time.Since(start).Round(time.Millisecond))
			return true
		}
		if p.e.C.Exited(n) {
			exits++
			b, _ := os.ReadFile(p.e.C.LogPath(n))
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			p.logf("%s exited at start (%d): %s", n, exits, lines[len(lines)-1])
			if exits == 5 {
				return false
			}
			p.e.C.Kill(n) // reaps it
			_ = rpc.Sleep(ctx, 500*time.Millisecond)
			p.logf("start %s again", n)
			if err := p.e.C.Restart(n); err != nil {
				p.logf("start %s: %v", n, err)
				return false
			}
			continue
		}
		_ = rpc.Sleep(ctx, 100*time.Millisecond)
	}
	p.logf("%s did not serve within a minute", n)
	return false
}

// logRoutes logs how the new replica reaches its peers, as it says.
func (p *replacement) logRoutes(ctx context.Context, n Replica) {
	l, err := p.e.C.listAt(ctx, p.e.C.listenAddr(n), p.g, time.Second)
	if err != nil {
		p.logf("%s's view of its group: %v", n, err)
		return
	}
	var routes []string
	for _, m := range l.GetMembers() {
		if m.GetId() == n.ID {
			continue
		}
		r := fmt.Sprintf("%d at %s", m.GetId(), p.e.C.Describe(m.GetAddr()))
		if m.GetRole() != memberpb.Role_ROLE_VOTER {
			r += fmt.Sprintf(" (%s)", m.GetRole().Name())
		}
		routes = append(routes, r)
	}
	p.logf("%s reaches %s", n, strings.Join(routes, ", "))
}

// waitConfig waits until the controller's latest configuration lists the
// group's new replica at addr (the group's leader tells it).
func (p *replacement) waitConfig(ctx context.Context, addr string) bool {
	ctl, err := ctlclient.New(p.e.C.Addrs(0), p.e.C.Dial()...)
	if err != nil {
		p.logf("controller client: %v", err)
		return false
	}
	defer ctl.Close()
	start := time.Now()
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		cfg, _, err := ctl.Query(qctx, -1)
		cancel()
		if err == nil && slices.Contains(cfg.Groups[p.g], addr) {
			p.logf("configuration %d lists the new replica (%v after the replacement): %v", cfg.Num,
				time.Since(start).Round(time.Millisecond), cfg.Groups[p.g])
			return true
		}
		_ = rpc.Sleep(ctx, 200*time.Millisecond)
	}
	p.logf("the controller's configuration never listed %s", addr)
	return false
}

// role is id's role in l (unspecified: not a member).
func role(l *memberpb.ListReply, id uint64) memberpb.Role {
	for _, m := range l.GetMembers() {
		if m.GetId() == id {
			return m.GetRole()
		}
	}
	return memberpb.Role_ROLE_UNSPECIFIED
}

func voters(l *memberpb.ListReply) []uint64 {
	var out []uint64
	for _, m := range l.GetMembers() {
		if m.GetRole() == memberpb.Role_ROLE_VOTER {
			out = append(out, m.GetId())
		}
	}
	return out
}

// caughtUp reports whether the leader's list shows learner id with at
// least 95% of the leader's log (REPLACE needs 90%).
func caughtUp(l *memberpb.ListReply, id uint64) bool {
	var lead, match uint64
	for _, m := range l.GetMembers() {
		switch m.GetId() {
		case l.GetHeader().GetReplica():
			lead = m.GetMatch()
		case id:
			match = m.GetMatch()
		}
	}
	return lead > 0 && float64(match) >= 0.95*float64(lead)
}

// outcome names the kind of a failed change attempt.
func outcome(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{
		{memberclient.ErrOutcomeUnknown, "unknown outcome"},
		{rpcerr.ErrNotLeader, "no leader reachable"},
		{rpcerr.ErrLearnerBehind, "refused, learner behind"},
		{rpcerr.ErrMembershipChangeInProgress, "refused, a change in progress"},
		{rpcerr.ErrWouldLoseQuorum, "refused, would lose quorum"},
		{rpcerr.ErrMemberExists, "refused, member exists"},
		{rpcerr.ErrNotLearner, "refused, not a learner"},
		{rpcerr.ErrUnknownMember, "refused, unknown member"},
		{memberpb.ErrGroupUnreachable, "no leader reachable"}, // the node's Host could not ask the leader
	} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	switch {
	case rpc.Refused(err):
		return "replica down"
	case rpcerr.Retryable(err) || errors.Is(err, context.DeadlineExceeded):
		return "unknown outcome"
	}
	return "error"
}

func tally(seen map[string]int) string {
	if len(seen) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(seen)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, seen[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
