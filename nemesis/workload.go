package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/internal/linearizability"
)

// Workload is a set of sequential clients recording one history.
type Workload struct {
	Rec linearizability.Recorder

	mu      sync.Mutex
	keys    map[string]bool
	acked   atomic.Int64
	unknown atomic.Int64
	failed  atomic.Int64
}

// clientsPerKeyGroup clients share each window of two keys; each client
// moves to a new window every opsPerWindow operations, so a key sees at
// most 3 clients and about 75 operations. Porcupine's search is
// exponential in the writes it cannot order: concurrent appends with no
// read between them each make a distinct state. A soak run with 4 clients
// per key produced a 105-operation key that porcupine could not decide in
// 10 minutes (and whose order checked out by hand), so keys see fewer
// concurrent appenders and more puts, which collapse orderings.
const (
	clientsPerKeyGroup = 3
	opsPerWindow       = 50
)

// Run runs n sequential clients against the controller at ctls until ctx
// ends. Every write value is unique.
func (w *Workload) Run(ctx context.Context, ctls []string, n int, seed uint64) error {
	if w.keys == nil {
		w.keys = map[string]bool{}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for c := 0; c < n; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cl, err := client.New(cctx, ctls, client.WithAttemptTimeout(time.Second))
			cancel()
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			for i := 0; ctx.Err() == nil; i++ {
				key := fmt.Sprintf("k%d.%d.%d", c/clientsPerKeyGroup, i/opsPerWindow, rng.IntN(2))
				w.op(ctx, cl, c, key, fmt.Sprintf("<%d.%d>", c, i), rng.Float64())
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (w *Workload) op(ctx context.Context, cl *client.Client, c int, key, value string, p float64) {
	w.mu.Lock()
	w.keys[key] = true
	w.mu.Unlock()
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	in := linearizability.Input{Key: key, Value: value}
	call := w.Rec.Now()
	var err error
	switch {
	case p < 0.45:
		in.Op = linearizability.Get
		v, found, gerr := cl.Get(octx, []byte(key))
		if gerr == nil {
			w.Rec.Done(c, in, linearizability.Output{Value: string(v), Found: found}, call, w.Rec.Now())
			w.acked.Add(1)
		} else {
			w.failed.Add(1)
		}
		return
	case p < 0.8:
		in.Op = linearizability.Append
		err = cl.Append(octx, []byte(key), []byte(value))
	default:
		in.Op = linearizability.Put
		err = cl.Put(octx, []byte(key), []byte(value))
	}
	if err != nil {
		w.Rec.Unknown(c, in, call) // a failed write may still have happened
		w.unknown.Add(1)
		return
	}
	w.Rec.Done(c, in, linearizability.Output{}, call, w.Rec.Now())
	w.acked.Add(1)
}

// FinalRead reads every key the workload touched, each within budget,
// records the reads in the history, and checks that no appended value
// appears twice.
func (w *Workload) FinalRead(ctx context.Context, ctls []string, budget time.Duration) error {
	cl, err := client.New(ctx, ctls)
	if err != nil {
		return err
	}
	defer cl.Close()
	w.mu.Lock()
	keys := make([]string, 0, len(w.keys))
	for k := range w.keys {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	for _, k := range keys {
		rctx, cancel := context.WithTimeout(ctx, budget)
		call := w.Rec.Now()
		v, found, err := cl.Get(rctx, []byte(k))
		cancel()
		if err != nil {
			return fmt.Errorf("final read of %s not served within %v of healing: %w", k, budget, err)
		}
		w.Rec.Done(finalReader, linearizability.Input{Op: linearizability.Get, Key: k}, linearizability.Output{Value: string(v), Found: found}, call, w.Rec.Now())
		for _, tok := range strings.SplitAfter(string(v), ">") {
			if tok != "" && strings.Count(string(v), tok) > 1 {
				return fmt.Errorf("key %s holds %s %d times", k, tok, strings.Count(string(v), tok))
			}
		}
	}
	return nil
}

// Stats summarises the workload.
func (w *Workload) Stats() string {
	return fmt.Sprintf("%d operations acknowledged, %d writes with unknown outcome, %d failed reads, %d keys",
		w.acked.Load(), w.unknown.Load(), w.failed.Load(), len(w.keys))
}

// finalReader is the client id of the final reads in the history.
const finalReader = 999
