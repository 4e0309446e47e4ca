package nemesis

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/faultproxy"
	"github.com/shardkv/shardkv/internal/rpc"
)

// Env is what a scenario acts on.
type Env struct {
	C    *Cluster
	Rng  *rand.Rand
	Ctl  *ctlclient.Client
	Logf func(format string, args ...any) // the printed schedule

	mu       sync.Mutex
	heals    []time.Time // when the scenario healed the network
	failures []error     // what the scenario found wrong (Fail)
}

// Fail records that the scenario found the cluster misbehaving (a step it
// checks did not happen): the run fails with it.
func (e *Env) Fail(err error) {
	e.Logf("FAIL: %v", err)
	e.mu.Lock()
	e.failures = append(e.failures, err)
	e.mu.Unlock()
}

// Failed is what Fail recorded, joined (nil: nothing).
func (e *Env) Failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return errors.Join(e.failures...)
}

// healNetwork removes every network fault and records when, so the runner
// can measure how soon service came back.
func (e *Env) healNetwork() {
	healNetwork(e.C)
	e.mu.Lock()
	e.heals = append(e.heals, time.Now())
	e.mu.Unlock()
}

// healAndPause heals the network, logged, and lets the cluster settle for
// a second before the scenario's next fault.
func (e *Env) healAndPause(ctx context.Context) {
	e.Logf("heal network")
	e.healNetwork()
	_ = rpc.Sleep(ctx, time.Second)
}

// Heals returns when the scenario healed the network.
func (e *Env) Heals() []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Time(nil), e.heals...)
}

// Scenario injects faults until ctx ends; the runner heals afterwards.
type Scenario struct {
	Name string
	// Netfilter scenarios make real partitions (see netfilter.go): they
	// need root and iptables, and run every replica as its own user.
	Netfilter bool
	// MinDuration, if set, lengthens a run so that every kind of fault
	// of the scenario happens at least once.
	MinDuration time.Duration
	Run         func(ctx context.Context, e *Env)
}

// must logs a fault that could not be made.
func (e *Env) must(err error) {
	if err != nil {
		e.Logf("fault not made: %v", err)
	}
}

func (e *Env) randomReplica(includeController bool) Replica {
	lo := 1
	if includeController {
		lo = 0
	}
	g := lo + e.Rng.IntN(e.C.Groups()+1-lo)
	return Replica{Group: uint64(g), ID: uint64(1 + e.Rng.IntN(3))}
}

func (e *Env) randomGroup() uint64 { return uint64(1 + e.Rng.IntN(e.C.Groups())) }

func (e *Env) leaderOf(ctx context.Context, g uint64) Replica {
	if r, ok := e.C.Leader(ctx, g); ok {
		return r
	}
	return Replica{Group: g, ID: uint64(1 + e.Rng.IntN(3))}
}

func (e *Env) killAndRestart(ctx context.Context, r Replica, down time.Duration) {
	e.Logf("kill -9 %s", e.C.Process(r))
	e.C.Kill(r)
	_ = rpc.Sleep(ctx, down)
	e.Logf("restart %s", e.C.Process(r))
	if err := e.C.Restart(r); err != nil {
		e.Logf("restart %s: %v", r, err)
	}
}

// Scenarios are the fault schedules every run covers.
var Scenarios = []Scenario{
	{Name: "silent-partitions", Netfilter: true, MinDuration: 24 * time.Second,
		Run: func(ctx context.Context, e *Env) {
			for step := 0; ctx.Err() == nil; step++ {
				g := e.randomGroup()
				lead := e.leaderOf(ctx, g)
				others := func(r Replica) (out []Replica) {
					for id := uint64(1); id <= 3; id++ {
						if id != r.ID {
							out = append(out, Replica{Group: r.Group, ID: id})
						}
					}
					return out
				}
				var rejoin Replica // a replica whose catching up is measured after the heal
				switch step % 5 {
				case 0:
					e.Logf("drop every client's packets to leader %s (its group still reaches it)", e.C.Process(lead))
					e.must(e.C.DropClients(lead))
				case 1:
					e.Logf("silence leader %s: nothing it sends or is sent arrives", e.C.Process(lead))
					e.must(e.C.Silence(lead))
				case 2:
					c := e.leaderOf(ctx, 0)
					e.Logf("cut controller leader %s from the other controllers only, and move a shard", c)
					for _, o := range others(c) {
						e.must(e.C.DropLink(c, o))
						e.must(e.C.DropLink(o, c))
					}
					s, to := e.Rng.IntN(12), e.randomGroup()
					cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					if _, err := e.Ctl.Move(cctx, s, to); err != nil {
						e.Logf("move shard %d to group %d: %v", s, to, err)
					} else {
						e.Logf("moved shard %d to group %d", s, to)
					}
					cancel()
				case 3:
					e.Logf("one way: leader %s's raft packets to its group dropped", e.C.Process(lead))
					for _, o := range others(lead) {
						e.must(e.C.DropLink(lead, o))
					}
				case 4:
					f := others(lead)[0]
					e.Logf("silence follower %s (it must rejoin at once when healed)", e.C.Process(f))
					e.must(e.C.Silence(f))
					rejoin = f
				}
				_ = rpc.Sleep(ctx, time.Duration(2000+e.Rng.IntN(1000))*time.Millisecond)
				e.Logf("heal network")
				e.healNetwork()
				if rejoin != (Replica{}) {
					if d, ok := e.C.CatchUp(ctx, rejoin, lead, 5*time.Second); ok {
						e.Logf("%s caught up with %s %v after the heal", rejoin, lead, d.Round(time.Millisecond))
					} else {
						e.Logf("%s did not catch up with %s within 5s of the heal", rejoin, lead)
					}
				}
				_ = rpc.Sleep(ctx, 1500*time.Millisecond)
			}
		}},
	{Name: "kill", Run: func(ctx context.Context, e *Env) {
		for ctx.Err() == nil {
			r := e.randomReplica(true)
			if e.Rng.IntN(2) == 0 {
				r = e.leaderOf(ctx, r.Group) // leaders too
			}
			e.killAndRestart(ctx, r, time.Duration(500+e.Rng.IntN(1500))*time.Millisecond)
			_ = rpc.Sleep(ctx, time.Duration(1000+e.Rng.IntN(2000))*time.Millisecond)
		}
	}},
	{Name: "pause-leader", Run: func(ctx context.Context, e *Env) {
		for ctx.Err() == nil {
			r := e.leaderOf(ctx, e.randomGroup())
			e.Logf("SIGSTOP %s", e.C.Process(r))
			e.C.Pause(r)
			_ = rpc.Sleep(ctx, time.Duration(3000+e.Rng.IntN(2000))*time.Millisecond)
			e.Logf("SIGCONT %s", e.C.Process(r))
			e.C.Resume(r)
			_ = rpc.Sleep(ctx, time.Second)
		}
	}},
	{Name: "partitions", Run: func(ctx context.Context, e *Env) {
		for step := 0; ctx.Err() == nil; step++ {
			g := e.randomGroup()
			lead := e.leaderOf(ctx, g)
			switch step % 4 {
			case 0:
				e.Logf("isolate leader %s", e.C.Process(lead))
				e.C.Isolate(lead)
			case 1: // majority/minority: the leader alone with nobody is case 0; here a follower is cut
				f := Replica{Group: g, ID: lead.ID%3 + 1}
				e.Logf("isolate follower %s (minority of one)", e.C.Process(f))
				e.C.Isolate(f)
			case 2: // a ring of overlapping majorities: the two followers cannot talk
				a, b := Replica{Group: g, ID: lead.ID%3 + 1}, Replica{Group: g, ID: (lead.ID+1)%3 + 1}
				e.Logf("ring in group %d: %s and %s cut from each other", g, e.C.Process(a), e.C.Process(b))
				e.C.Link(a, b).Set(faultproxy.Faults{Blackhole: true})
				e.C.Link(b, a).Set(faultproxy.Faults{Blackhole: true})
			case 3: // one way: the leader can hear but not speak
				e.Logf("one-way: %s cannot send to its group", e.C.Process(lead))
				for id := uint64(1); id <= 3; id++ {
					if id != lead.ID {
						e.C.Link(lead, Replica{Group: g, ID: id}).Set(faultproxy.Faults{Blackhole: true})
					}
				}
			}
			_ = rpc.Sleep(ctx, time.Duration(2500+e.Rng.IntN(1500))*time.Millisecond)
			e.healAndPause(ctx)
		}
	}},
	{Name: "reconfigure-and-kill", Run: func(ctx context.Context, e *Env) {
		n := e.C.Groups()
		for step := 0; ctx.Err() == nil; step++ {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			switch step % 3 {
			case 0:
				g := uint64(n)
				e.Logf("leave group %d", g)
				if _, err := e.Ctl.Leave(cctx, []uint64{g}, false); err != nil {
					e.Logf("leave: %v", err)
				}
			case 1:
				g := uint64(n)
				e.Logf("join group %d", g)
				if _, err := e.Ctl.Join(cctx, map[uint64][]string{g: e.C.Addrs(g)}); err != nil {
					e.Logf("join: %v", err)
				}
			case 2:
				s, g := e.Rng.IntN(12), e.randomGroup()
				e.Logf("move shard %d to group %d", s, g)
				if _, err := e.Ctl.Move(cctx, s, g); err != nil {
					e.Logf("move: %v", err)
				}
			}
			cancel()
			e.killAndRestart(ctx, e.randomReplica(true), time.Second)
			_ = rpc.Sleep(ctx, time.Duration(1000+e.Rng.IntN(1000))*time.Millisecond)
		}
	}},
	{Name: "partition-during-migration", Run: func(ctx context.Context, e *Env) {
		for step := 0; ctx.Err() == nil; step++ {
			s := e.Rng.IntN(12)
			cfg, _, err := e.Ctl.Query(ctx, -1)
			if err != nil || len(cfg.Shards) <= s {
				_ = rpc.Sleep(ctx, time.Second)
				continue
			}
			from := cfg.Shards[s]
			to := uint64(from%uint64(e.C.Groups()) + 1)
			old := e.leaderOf(ctx, from)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			e.Logf("move shard %d from group %d to %d, then isolate the old owner's leader %s", s, from, to, e.C.Process(old))
			_, err = e.Ctl.Move(cctx, s, to)
			cancel()
			if err != nil {
				e.Logf("move: %v", err)
			}
			e.C.Isolate(old)
			_ = rpc.Sleep(ctx, 3*time.Second)
			if step%2 == 1 {
				c := e.leaderOf(ctx, 0)
				e.Logf("isolate the controller leader %s", c)
				e.C.Isolate(c)
				_ = rpc.Sleep(ctx, 3*time.Second)
			}
			e.healAndPause(ctx)
		}
	}},
	{Name: "kill-whole-group", Run: func(ctx context.Context, e *Env) {
		for ctx.Err() == nil {
			g := e.randomGroup()
			if e.C.Nodes() {
				e.Logf("kill -9 every replica of group %d: every node", g)
			} else {
				e.Logf("kill -9 every replica of group %d", g)
			}
			for id := uint64(1); id <= 3; id++ {
				e.C.Kill(Replica{Group: g, ID: id})
			}
			_ = rpc.Sleep(ctx, 2*time.Second)
			e.Logf("restart group %d", g)
			for id := uint64(1); id <= 3; id++ {
				if err := e.C.Restart(Replica{Group: g, ID: id}); err != nil {
					e.Logf("restart: %v", err)
				}
			}
			_ = rpc.Sleep(ctx, 3*time.Second)
		}
	}},
	// A dead machine replaced in a group, then in the controller, with
	// kill -9 of the leader and a partition during the membership changes
	// (see replace.go); on nodes, in the controller only.
	{Name: "replace-under-faults", MinDuration: 24 * time.Second, Run: replaceUnderFaults},
	{Name: "lossy-links-and-snapshot-catch-up", Run: func(ctx context.Context, e *Env) {
		for step := 0; ctx.Err() == nil; step++ {
			if step%2 == 0 {
				r := e.randomReplica(false)
				e.Logf("5%% chunk loss and 20ms delay on every link of %s", e.C.Process(r))
				e.C.Degrade(r, faultproxy.Faults{DropFraction: 0.05, Delay: 20 * time.Millisecond})
			} else {
				g := e.randomGroup()
				lead := e.leaderOf(ctx, g)
				f := Replica{Group: g, ID: lead.ID%3 + 1}
				e.Logf("cut follower %s off long enough to need a snapshot", e.C.Process(f))
				e.C.Isolate(f)
			}
			_ = rpc.Sleep(ctx, 4*time.Second)
			e.healAndPause(ctx)
		}
	}},
}

func healNetwork(c *Cluster) { _ = c.healNetwork() }
