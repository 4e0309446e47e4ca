package rpc

import (
	"errors"
	"sync"

	"google.golang.org/grpc"
)

// Pool holds one gRPC connection per destination address, dialled on first
// use with the pool's options and shared by every caller. gRPC multiplexes
// any number of concurrent calls over one connection and reconnects it by
// itself, so one per destination is all a process needs.
//
// A Pool is safe for concurrent use. Its zero value is not usable: use
// NewPool.
type Pool struct {
	dial []grpc.DialOption

	mu     sync.RWMutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// ErrPoolClosed is returned by Get after Close.
var ErrPoolClosed = errors.New("rpc: connection pool closed")

// NewPool returns a pool whose connections are dialled with dial
// (DialOptions() when empty).
func NewPool(dial ...grpc.DialOption) *Pool {
	if len(dial) == 0 {
		dial = DialOptions()
	}
	return &Pool{dial: dial, conns: map[string]*grpc.ClientConn{}}
}

// Get returns the connection to addr (host:port), creating it if needed.
// Creating does not wait for the connection to be established: the first
// call on it does, within the call's deadline.
func (p *Pool) Get(addr string) (*grpc.ClientConn, error) {
	p.mu.RLock()
	conn, ok := p.conns[addr]
	closed := p.closed
	p.mu.RUnlock()
	if ok { // every call takes this path once connected: no exclusive lock
		return conn, nil
	}
	if closed {
		return nil, ErrPoolClosed
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolClosed
	}
	if conn, ok := p.conns[addr]; ok {
		return conn, nil
	}
	conn, err := grpc.NewClient(addr, p.dial...)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = conn
	return conn, nil
}

// Retain closes and forgets the connections to every address for which
// keep returns false (the replicas of groups that left, for instance).
// Calls in progress on them fail with Canceled.
func (p *Pool) Retain(keep func(addr string) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, conn := range p.conns {
		if !keep(addr) {
			_ = conn.Close()
			delete(p.conns, addr)
		}
	}
}

// Len returns the number of open connections.
func (p *Pool) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.conns)
}

// Close closes every connection; Get fails afterwards.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, conn := range p.conns {
		_ = conn.Close()
		delete(p.conns, addr)
	}
	return nil
}
