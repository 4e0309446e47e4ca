package groupserver

import (
	"sync/atomic"
	"time"
)

// opPool runs the gets of KV.Batch calls, a group's at a time (and a
// write whose group's queue is full), on goroutines that outlive one op:
// a fresh goroutine grows (and copies) its stack on every op that reaches
// Pebble, which cost 18% of a leader's CPU under batched gets; a worker
// keeps the stack it grew. Workers start on demand, up to maxOpWorkers,
// and end after opWorkerIdle without work; an op no worker is free for
// gets a goroutine of its own, as gRPC does beyond its stream workers.
type opPool struct {
	work    chan func() // unbuffered: a send succeeds only to an idle worker
	workers atomic.Int32
}

const (
	maxOpWorkers = 64
	opWorkerIdle = 5 * time.Second
)

func newOpPool() *opPool { return &opPool{work: make(chan func())} }

// run runs f on an idle worker, a new worker, or a goroutine of its own.
func (p *opPool) run(f func()) {
	select {
	case p.work <- f:
		return
	default:
	}
	if p.workers.Add(1) <= maxOpWorkers {
		go p.worker(f)
		return
	}
	p.workers.Add(-1)
	go f()
}

func (p *opPool) worker(f func()) {
	defer p.workers.Add(-1)
	idle := time.NewTimer(opWorkerIdle)
	defer idle.Stop()
	for {
		f()
		idle.Reset(opWorkerIdle)
		select {
		case f = <-p.work:
		case <-idle.C:
			return
		}
	}
}
