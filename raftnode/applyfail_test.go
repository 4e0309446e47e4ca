package raftnode_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardkv/shardkv/raftnode"
)

// failingApply fails the first Apply, on member failOn, of a batch holding a
// command whose value starts with "FAIL", and records every Apply after
// that failure.
type failingApply struct {
	raftnode.StateMachine
	id     uint64
	failOn *atomic.Uint64

	mu     sync.Mutex
	failed bool
	after  []uint64 // first index of each batch applied after the failure
}

var errInjected = errors.New("injected apply failure")

func (f *failingApply) Apply(ents []raftnode.Entry) ([]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed {
		f.after = append(f.after, ents[0].Index)
		return f.StateMachine.Apply(ents)
	}
	if f.id == f.failOn.Load() {
		for _, e := range ents {
			if bytes.Contains(e.Data, []byte("FAIL")) {
				f.failed = true
				return nil, errInjected
			}
		}
	}
	return f.StateMachine.Apply(ents)
}

// TestFailedApplyStopsApplying: a batch whose Apply fails stops the member
// and nothing after it is applied there, whichever goroutine applies. The
// failing batch is large, so the apply goroutine takes it, while small
// batches keep committing behind it, which the Ready loop would apply
// itself (regression: once the apply goroutine had counted the failed
// batch off, the Ready loop applied later batches over the hole, durably,
// before it saw the member stopped).
func TestFailedApplyStopsApplying(t *testing.T) {
	var failOn atomic.Uint64
	sms := map[uint64]*failingApply{}
	var mu sync.Mutex
	c := newCluster(t, 3, func(cfg *raftnode.Config) {
		f := &failingApply{StateMachine: cfg.StateMachine, id: cfg.ID, failOn: &failOn}
		mu.Lock()
		sms[cfg.ID] = f
		mu.Unlock()
		cfg.StateMachine = f
	})
	lead := c.leader()
	victim := uint64(1)
	if victim == lead {
		victim = 2
	}
	failOn.Store(victim)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.propose(ctx, encodeCmd('p', "warm", "up")); err != nil {
		t.Fatal(err)
	}
	// Small proposals stream on while the large one fails on the victim.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = c.propose(ctx, encodeCmd('p', fmt.Sprintf("k%d", w), fmt.Sprint(i)), lead)
			}
		})
	}
	big := append([]byte("FAIL"), make([]byte, 64<<10)...)
	if _, err := c.propose(ctx, encodeCmd('p', "big", string(big)), lead); err != nil {
		t.Fatal(err)
	}
	n := c.node(victim)
	select {
	case <-n.Done():
	case <-ctx.Done():
		t.Fatal("the member whose apply failed did not stop")
	}
	time.Sleep(500 * time.Millisecond) // small batches keep committing
	close(stop)
	wg.Wait()
	if err := n.Err(); !errors.Is(err, errInjected) {
		t.Fatalf("member %d stopped with %v, want the apply failure", victim, err)
	}
	f := sms[victim]
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.after) > 0 {
		t.Fatalf("member %d applied batches at %v after a failed apply: entries skipped, state diverged", victim, f.after)
	}
}
