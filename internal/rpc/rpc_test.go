package rpc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shardkv/shardkv/internal/rpc"
)

func TestPoolSharesAndRetains(t *testing.T) {
	p := rpc.NewPool()
	a1, err := p.Get("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := p.Get("127.0.0.1:1")
	if a1 != a2 {
		t.Fatal("two connections to one destination")
	}
	if _, err := p.Get("127.0.0.1:2"); err != nil {
		t.Fatal(err)
	}
	p.Retain(func(addr string) bool { return addr == "127.0.0.1:2" })
	if p.Len() != 1 {
		t.Fatalf("%d connections after Retain, want 1", p.Len())
	}
	if b, _ := p.Get("127.0.0.1:1"); b == a1 {
		t.Fatal("a released connection was handed out again")
	}
	_ = p.Close()
	if _, err := p.Get("127.0.0.1:2"); !errors.Is(err, rpc.ErrPoolClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

func TestBackoffHasJitterAndBound(t *testing.T) {
	b := rpc.NewBackoff(10*time.Millisecond, 100*time.Millisecond)
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		d := b.NextBackOff()
		if d < 5*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("delay %v outside [base/2, 1.5*max]", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct delays in 50: no jitter", len(seen))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rpc.Wait(ctx, b); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on an ended context: %v", err)
	}
}
