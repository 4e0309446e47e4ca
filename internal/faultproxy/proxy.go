// Package faultproxy is a TCP proxy that misbehaves on command, for
// injecting network faults between real processes on a kernel without
// netem and without root.
//
// One Proxy forwards one listening address to one target. Its Faults can be
// changed at any time and apply to connections already open:
//
//   - Blackhole: connections are accepted but bytes are read and thrown
//     away in both directions, so peers see silence (a partition).
//   - Pause: bytes wait, undelivered, until the pause ends (a stopped
//     switch or a process frozen mid-stream).
//   - RefuseFraction: that fraction of new connections is closed at once.
//   - DropFraction: each chunk of bytes read is lost with that
//     probability; the connection is then closed, as a real stream whose
//     bytes vanished would fail its framing.
//   - Delay: every chunk waits this long before it is forwarded.
//
// Randomness comes from one seeded source per proxy.
package faultproxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Faults describes how a proxy misbehaves. The zero value forwards
// faithfully.
type Faults struct {
	Blackhole      bool
	Pause          bool
	RefuseFraction float64
	DropFraction   float64
	Delay          time.Duration
}

// Proxy forwards connections from its listener to a target address.
type Proxy struct {
	lis    net.Listener
	target string

	mu     sync.Mutex
	cond   *sync.Cond // signalled when faults change
	faults Faults
	rng    *rand.Rand
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// Listen starts a proxy on listenAddr ("127.0.0.1:0" for any port) for
// target.
func Listen(listenAddr, target string, seed uint64) (*Proxy, error) {
	lis, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{lis: lis, target: target, rng: rand.New(rand.NewPCG(seed, 0x5eed)), conns: map[net.Conn]bool{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Set replaces the proxy's faults. Entering or leaving a blackhole closes
// the connections open at that moment: a stream cannot survive losing
// bytes in the middle, and the connections accepted during the blackhole
// are silent ones that must not outlive it.
func (p *Proxy) Set(f Faults) {
	p.mu.Lock()
	if f.Blackhole != p.faults.Blackhole {
		for c := range p.conns {
			c.Close()
		}
	}
	p.faults = f
	p.mu.Unlock()
	p.cond.Broadcast()
}

// Faults returns the current faults.
func (p *Proxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// Heal removes every fault.
func (p *Proxy) Heal() { p.Set(Faults{}) }

// Close stops the proxy and closes every connection through it.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.cond.Broadcast()
	err := p.lis.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) roll(prob float64) bool {
	if prob <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64() < prob
}

func (p *Proxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on && p.closed {
		return false
	}
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		if p.roll(p.Faults().RefuseFraction) {
			in.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(in)
	}
}

func (p *Proxy) serve(in net.Conn) {
	defer p.wg.Done()
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	if !p.track(in, true) || !p.track(out, true) {
		in.Close()
		out.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(out, in) }()
	go func() { defer wg.Done(); p.pipe(in, out) }()
	wg.Wait()
	p.track(in, false)
	p.track(out, false)
}

// pipe copies src to dst chunk by chunk, applying the faults current at
// each chunk, and closes both ends when either fails.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.forward(dst, buf[:n]) {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}
			return
		}
	}
}

// forward delivers one chunk under the current faults; false ends the
// connection.
func (p *Proxy) forward(dst net.Conn, chunk []byte) bool {
	p.mu.Lock()
	for p.faults.Pause && !p.closed {
		p.cond.Wait()
	}
	f, closed := p.faults, p.closed
	p.mu.Unlock()
	switch {
	case closed:
		return false
	case f.Blackhole:
		return true // swallowed
	case p.roll(f.DropFraction):
		return false
	}
	if f.Delay > 0 {
		time.Sleep(f.Delay)
	}
	_, err := dst.Write(chunk)
	return err == nil
}
