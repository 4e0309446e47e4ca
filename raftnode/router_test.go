package raftnode_test

import (
	"context"
	"errors"
	"sync"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/transport"
)

// router is a transport.Network that delivers nothing by itself: every
// message a member sends waits in one queue, in sending order, until the
// test delivers or drops it.
type router struct {
	mu       sync.Mutex
	handlers map[uint64]transport.Handler
	queue    []*raftpb.Message
	cut      map[[2]uint64]bool // directed links that lose every message
	snaps    int                // snapshots members tried to send
}

func newRouter() *router {
	return &router{handlers: map[uint64]transport.Handler{}, cut: map[[2]uint64]bool{}}
}

func (r *router) Join(_, id uint64, h transport.Handler) (transport.Transport, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.handlers[id]; ok {
		return nil, errors.New("router: member already joined")
	}
	r.handlers[id] = h
	return &routerEnd{r: r, id: id, h: h}, nil
}

// take removes and returns the queued messages addressed to id.
func (r *router) take(id uint64) []*raftpb.Message { return r.takeIf(id, everyMessage) }

func everyMessage(*raftpb.Message) bool { return true }

// takeIf removes and returns the queued messages addressed to id for which
// match holds; the others stay queued, in order.
func (r *router) takeIf(id uint64, match func(*raftpb.Message) bool) []*raftpb.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var mine []*raftpb.Message
	kept := r.queue[:0]
	for _, m := range r.queue {
		if m.GetTo() == id && match(m) {
			mine = append(mine, m)
		} else {
			kept = append(kept, m)
		}
	}
	clear(r.queue[len(kept):])
	r.queue = kept
	return mine
}

// handler returns the member a message from one member to another reaches,
// or nil when the link is cut or the receiver has left.
func (r *router) handler(from, to uint64) transport.Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut[[2]uint64{from, to}] {
		return nil
	}
	return r.handlers[to]
}

// isolate cuts every link to and from id.
func (r *router) isolate(id uint64, peers []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range peers {
		if p != id {
			r.cut[[2]uint64{id, p}] = true
			r.cut[[2]uint64{p, id}] = true
		}
	}
}

func (r *router) heal() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.cut)
}

type routerEnd struct {
	r  *router
	id uint64
	h  transport.Handler // the run that joined: an earlier run's Close must not unregister a later one
}

func (e *routerEnd) Send(msgs []*raftpb.Message) {
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	for _, m := range msgs {
		e.r.queue = append(e.r.queue, proto.Clone(m).(*raftpb.Message))
	}
}

// SendSnapshot refuses: the transcripts keep logs short enough that no
// member needs one, and a test that sends one fails (see env.settle).
func (e *routerEnd) SendSnapshot(context.Context, *raftpb.Message) error {
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	e.r.snaps++
	return errors.New("router: snapshots are not routed")
}

func (e *routerEnd) Close() error {
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	if e.r.handlers[e.id] == e.h {
		delete(e.r.handlers, e.id)
	}
	return nil
}
