package groupserver

import (
	"context"
	"sync/atomic"
	"time"
)

// callGate counts the client and peer calls a replica is serving through
// its Router, so that a replica being dropped (a node's Unhost) can wait
// for them before its data is deleted: a read that passed its read index
// must not then read a deleted state as empty.
type callGate struct {
	inflight atomic.Int64
	closed   atomic.Bool
}

// enter counts a call in, or reports false once the gate closed.
func (g *callGate) enter() bool {
	g.inflight.Add(1)
	if g.closed.Load() {
		g.exit()
		return false
	}
	return true
}

func (g *callGate) exit() { g.inflight.Add(-1) }

// close refuses calls from now on and waits until the ones in flight end,
// or ctx does. A call that entered before close saw it open (enter counts
// itself before it looks), so the wait sees it.
func (g *callGate) close(ctx context.Context) error {
	g.closed.Store(true)
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for g.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
