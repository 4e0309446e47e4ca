package ctlclient_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/controllerpb"
)

// watchedController answers Watch as the controller does: at once when a
// configuration above after exists, else when one is published or the
// long-poll limit passes. It counts the Watch calls in flight.
type watchedController struct {
	controllerpb.UnimplementedControllerServer
	mu        sync.Mutex
	num       uint64
	published chan struct{}
	inFlight  atomic.Int32
	maxFlight atomic.Int32
	calls     atomic.Int32
}

func (w *watchedController) Watch(ctx context.Context, r *controllerpb.WatchRequest) (*controllerpb.QueryReply, error) {
	n := w.inFlight.Add(1)
	defer w.inFlight.Add(-1)
	w.calls.Add(1)
	for {
		if m := w.maxFlight.Load(); n <= m || w.maxFlight.CompareAndSwap(m, n) {
			break
		}
	}
	w.mu.Lock()
	num, published := w.num, w.published
	w.mu.Unlock()
	if num <= r.GetAfter() {
		select {
		case <-published:
		case <-time.After(controllerpb.WatchLimit):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return &controllerpb.QueryReply{Config: &controllerpb.Config{Num: w.num}}, nil
}

func (w *watchedController) publish(num uint64) {
	w.mu.Lock()
	w.num = num
	close(w.published)
	w.published = make(chan struct{})
	w.mu.Unlock()
}

// TestNewerSharesOneLongPoll: the leaders of every group a node hosts ask
// Newer at every tick; they share one long poll of the controller, and
// all learn of a new configuration from it.
func TestNewerSharesOneLongPoll(t *testing.T) {
	w := &watchedController{num: 5, published: make(chan struct{})}
	c := dial(t, serveController(t, w))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const leaders = 50
	got := make(chan uint64, leaders)
	for range leaders {
		go func() {
			// As the drivers do: a short wait, asked again until it answers.
			for ctx.Err() == nil {
				wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				n, err := c.Newer(wctx, 5)
				wcancel()
				if err == nil {
					got <- n
					return
				}
			}
		}()
	}
	time.Sleep(time.Second) // five rounds of every leader's wait
	w.publish(6)
	for range leaders {
		select {
		case n := <-got:
			if n != 6 {
				t.Fatalf("Newer(5) = %d, want 6", n)
			}
		case <-ctx.Done():
			t.Fatal("a waiter did not learn of configuration 6")
		}
	}
	if m := w.maxFlight.Load(); m != 1 {
		t.Errorf("%d controller long polls at once for %d waiting leaders, want 1", m, leaders)
	}
	t.Logf("%d Watch calls in all for %d leaders", w.calls.Load(), leaders)
	// Every waiter was answered by configuration 6: the feed asks no more
	// (it used to poll once more while the answered waiters left, which
	// also made this count race), and a configuration already known is
	// answered without asking.
	before := w.calls.Load()
	if n, err := c.Newer(ctx, 5); err != nil || n != 6 {
		t.Fatalf("Newer(5) after 6 was seen = %d, %v", n, err)
	}
	if w.calls.Load() != before {
		t.Error("Newer asked the controller about a configuration it already knew of")
	}
}
