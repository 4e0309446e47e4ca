// Package memnet is an in-memory transport.Network for tests: every link
// between two members can drop, delay, duplicate and reorder messages, and
// members can be partitioned, all driven by one seeded random source so a
// failing run can be replayed from its seed (timing still varies between
// runs, so replay narrows a failure down rather than reproducing it exactly).
package memnet

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/transport"
)

// ErrUnreachable is returned for a snapshot sent over a cut link or to a
// member that is not on the network.
var ErrUnreachable = errors.New("memnet: peer unreachable")

// Faults describes how one directed link misbehaves. The zero value is a
// perfect link.
type Faults struct {
	Drop      float64       // probability a message is lost
	Duplicate float64       // probability a message is delivered twice
	MinDelay  time.Duration // each delivery waits a uniform delay in [MinDelay, MaxDelay]
	MaxDelay  time.Duration // random delays also reorder messages
}

type member struct {
	group, id uint64
}

// Network is an in-memory network. The zero value is not usable; call New.
type Network struct {
	mu       sync.Mutex
	rng      *rand.Rand
	handlers map[member]transport.Handler
	faults   Faults               // every link unless overridden
	links    map[[2]member]Faults // per directed link
	cut      map[[2]member]bool   // directed links that deliver nothing
	wg       sync.WaitGroup
}

// New returns a perfect network whose faults, once set, draw from seed.
func New(seed uint64) *Network {
	return &Network{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		handlers: make(map[member]transport.Handler),
		links:    make(map[[2]member]Faults),
		cut:      make(map[[2]member]bool),
	}
}

// SetFaults sets the faults of every link without its own.
func (n *Network) SetFaults(f Faults) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults = f
}

// SetLinkFaults sets the faults of the link from one member to another of
// group.
func (n *Network) SetLinkFaults(group, from, to uint64, f Faults) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.links[[2]member{{group, from}, {group, to}}] = f
}

// Partition cuts group's members into the given sides: members on different
// sides cannot reach each other; members not listed keep every link.
func (n *Network) Partition(group uint64, sides ...[]uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, a := range sides {
		for j, b := range sides {
			if i == j {
				continue
			}
			for _, x := range a {
				for _, y := range b {
					n.cut[[2]member{{group, x}, {group, y}}] = true
				}
			}
		}
	}
}

// Isolate cuts every link to and from one member of group.
func (n *Network) Isolate(group, id uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for m := range n.handlers {
		if m.group == group && m.id != id {
			n.cut[[2]member{{group, id}, m}] = true
			n.cut[[2]member{m, {group, id}}] = true
		}
	}
}

// Heal removes every partition (faults stay).
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
}

// Join implements transport.Network.
func (n *Network) Join(group, id uint64, h transport.Handler) (transport.Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := member{group, id}
	if _, ok := n.handlers[m]; ok {
		return nil, errors.New("memnet: member already joined")
	}
	n.handlers[m] = h
	return &endpoint{net: n, self: m}, nil
}

// Wait waits for every delayed delivery in flight.
func (n *Network) Wait() { n.wg.Wait() }

// route decides the fate of one message: the handler to deliver it to and
// the delays of its copies (none when it is lost).
func (n *Network) route(from member, to uint64) (transport.Handler, []time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	dst := member{from.group, to}
	h, ok := n.handlers[dst]
	if !ok || n.cut[[2]member{from, dst}] {
		return nil, nil
	}
	f, ok := n.links[[2]member{from, dst}]
	if !ok {
		f = n.faults
	}
	if f.Drop > 0 && n.rng.Float64() < f.Drop {
		return nil, nil
	}
	copies := 1
	if f.Duplicate > 0 && n.rng.Float64() < f.Duplicate {
		copies = 2
	}
	delays := make([]time.Duration, copies)
	for i := range delays {
		delays[i] = f.MinDelay
		if span := f.MaxDelay - f.MinDelay; span > 0 {
			delays[i] += time.Duration(n.rng.Int64N(int64(span)))
		}
	}
	return h, delays
}

type endpoint struct {
	net    *Network
	self   member
	mu     sync.Mutex
	closed bool
}

func (e *endpoint) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// Send implements transport.Transport.
func (e *endpoint) Send(msgs []*raftpb.Message) {
	if e.isClosed() {
		return
	}
	for _, m := range msgs {
		h, delays := e.net.route(e.self, m.GetTo())
		if h == nil {
			continue
		}
		for _, d := range delays {
			// Receivers must not share the sender's message: clone it as a
			// real network would copy bytes.
			c := proto.Clone(m).(*raftpb.Message)
			if d == 0 {
				_ = h.Step(context.Background(), c)
				continue
			}
			e.net.wg.Add(1)
			time.AfterFunc(d, func() {
				defer e.net.wg.Done()
				_ = h.Step(context.Background(), c)
			})
		}
	}
}

// SendSnapshot implements transport.Transport; snapshots are delivered
// whole and never dropped at random, only by a cut link.
func (e *endpoint) SendSnapshot(ctx context.Context, m *raftpb.Message) error {
	if e.isClosed() {
		return ErrUnreachable
	}
	e.net.mu.Lock()
	dst := member{e.self.group, m.GetTo()}
	h, ok := e.net.handlers[dst]
	cut := e.net.cut[[2]member{e.self, dst}]
	e.net.mu.Unlock()
	if !ok || cut {
		return ErrUnreachable
	}
	return h.Step(ctx, proto.Clone(m).(*raftpb.Message))
}

// Close implements transport.Transport: the member leaves the network.
func (e *endpoint) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.net.mu.Lock()
	delete(e.net.handlers, e.self)
	e.net.mu.Unlock()
	return nil
}
