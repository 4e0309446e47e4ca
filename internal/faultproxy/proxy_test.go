package faultproxy

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echo runs a line echo server.
func echo(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return l.Addr().String()
}

func roundTrip(addr string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestFaults(t *testing.T) {
	p, err := Listen("127.0.0.1:0", echo(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got, err := roundTrip(p.Addr(), time.Second); err != nil || got != "ping\n" {
		t.Fatalf("healthy proxy: %q, %v", got, err)
	}

	p.Set(Faults{Blackhole: true})
	if _, err := roundTrip(p.Addr(), 300*time.Millisecond); err == nil {
		t.Fatal("blackholed proxy answered")
	}
	p.Heal()
	if got, err := roundTrip(p.Addr(), time.Second); err != nil || got != "ping\n" {
		t.Fatalf("healed proxy: %q, %v", got, err)
	}

	p.Set(Faults{Delay: 150 * time.Millisecond})
	start := time.Now()
	if _, err := roundTrip(p.Addr(), 2*time.Second); err != nil || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("delay not applied each way: %v after %v", err, time.Since(start))
	}

	p.Set(Faults{Pause: true})
	done := make(chan string, 1)
	go func() { got, _ := roundTrip(p.Addr(), 3*time.Second); done <- got }()
	select {
	case got := <-done:
		t.Fatalf("paused proxy delivered %q", got)
	case <-time.After(300 * time.Millisecond):
	}
	p.Heal()
	if got := <-done; got != "ping\n" {
		t.Fatalf("bytes held during the pause were lost: %q", got)
	}

	p.Set(Faults{RefuseFraction: 1})
	if _, err := roundTrip(p.Addr(), 300*time.Millisecond); err == nil {
		t.Fatal("refusing proxy answered")
	}
	p.Set(Faults{DropFraction: 1})
	if _, err := roundTrip(p.Addr(), 300*time.Millisecond); err == nil {
		t.Fatal("dropping proxy answered")
	}
	p.Heal()
	if got, err := roundTrip(p.Addr(), time.Second); err != nil || !strings.HasPrefix(got, "ping") {
		t.Fatalf("after faults: %q, %v", got, err)
	}
}
