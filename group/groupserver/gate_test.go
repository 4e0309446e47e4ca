package groupserver

import (
	"context"
	"testing"
	"time"
)

// TestCallGate: close waits for the calls in flight, refuses later ones,
// and gives up when its context ends while a call stays.
func TestCallGate(t *testing.T) {
	var g callGate
	if !g.enter() {
		t.Fatal("an open gate refused a call")
	}
	closed := make(chan error, 1)
	go func() { closed <- g.close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("close returned (%v) with a call in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	if g.enter() {
		t.Fatal("a closing gate let a call in")
	}
	g.exit()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}

	var stuck callGate
	stuck.enter()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := stuck.close(ctx); err == nil {
		t.Fatal("close returned nil with a call still in flight")
	}
}
