package nemesis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/linearizability"
	"github.com/shardkv/shardkv/internal/rpc"
)

// Workload is a set of sequential clients recording one history.
type Workload struct {
	Rec linearizability.Recorder
	// Dial are the clients' dial options (default rpc.DialOptions():
	// plaintext); Cluster.Dial gives a cluster's.
	Dial []grpc.DialOption

	mu      sync.Mutex
	keys    map[string]bool
	acked   atomic.Int64
	unknown atomic.Int64
	failed  atomic.Int64

	succMu    sync.Mutex
	successes []success // every successful operation, in completion order
}

// success is one successful operation: when, by which client, on which
// group (by the client's configuration then).
type success struct {
	at     time.Time
	client int
	group  uint64
}

func (w *Workload) succeeded(cl *client.Client, c int, key string) {
	cfg := cl.Config()
	var g uint64
	if len(cfg.Shards) > 0 {
		g = cfg.Shards[controller.ShardOf([]byte(key), len(cfg.Shards))]
	}
	w.succMu.Lock()
	w.successes = append(w.successes, success{at: time.Now(), client: c, group: g})
	w.succMu.Unlock()
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

// Run runs n sequential clients against the controllers ctls returns
// until ctx ends. Every write value is unique. When ctls changes (a
// controller replica was replaced), each client reconnects between two
// operations, as a client restarted with the new --controllers would.
func (w *Workload) Run(ctx context.Context, ctls func() []string, n int, seed uint64) error {
	if w.keys == nil {
		w.keys = map[string]bool{}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for c := 0; c < n; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addrs := ctls()
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cl, err := client.New(cctx, addrs, client.WithDialOptions(w.dial()...), client.WithAttemptTimeout(time.Second))
			cancel()
			if err != nil {
				errs <- err
				return
			}
			defer func() { cl.Close() }()
			var retry time.Time // when to try reconnecting again
			rng := rand.New(rand.NewPCG(seed, uint64(c)))
			seen := linearizability.Seen{}
			for i := 0; ctx.Err() == nil; i++ {
				if now := ctls(); !slices.Equal(now, addrs) && time.Now().After(retry) {
					if ncl, err := w.reconnect(ctx, now); err == nil {
						cl.Close()
						cl, addrs = ncl, now
					} else {
						retry = time.Now().Add(time.Second) // the old client serves meanwhile
					}
				}
				key := fmt.Sprintf("k%d.%d.%d", c/clientsPerKeyGroup, i/opsPerWindow, rng.IntN(2))
				w.op(ctx, cl, c, seen, key, fmt.Sprintf("<%d.%d>", c, i), rng.Float64())
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// reconnect makes a client of the controllers at addrs, within seconds.
func (w *Workload) reconnect(ctx context.Context, addrs []string) (*client.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return client.New(ctx, addrs, client.WithDialOptions(w.dial()...), client.WithAttemptTimeout(time.Second))
}

func (w *Workload) dial() []grpc.DialOption {
	if len(w.Dial) == 0 {
		return rpc.DialOptions()
	}
	return w.Dial
}

// op runs one operation of client c: a get, an append, a put, or a
// conditional write built on what c last saw of the key (seen).
func (w *Workload) op(ctx context.Context, cl *client.Client, c int, seen linearizability.Seen, key, value string, p float64) {
	w.mu.Lock()
	w.keys[key] = true
	w.mu.Unlock()
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	in := linearizability.Input{Key: key, Value: value}
	switch {
	case p < 0.4:
		in.Op = linearizability.Get
	case p < 0.7:
		in.Op = linearizability.Append
	case p < 0.85:
		in.Op = linearizability.Put
	default:
		in = seen.Conditional(key, value, p < 0.925)
	}
	out, err := w.Rec.Do(octx, cl, c, in)
	switch {
	case err == nil:
		seen.Observe(in, out)
		w.acked.Add(1)
		w.succeeded(cl, c, key)
	case in.Op == linearizability.Get:
		w.failed.Add(1) // observed nothing: not recorded
	default:
		w.unknown.Add(1) // a failed write may still have happened: recorded so
	}
}

// Availability is what clients saw: the longest window without a success
// per group and per client (from `from` to `to`), and for each heal the
// time until every group had a success again.
type Availability struct {
	GroupWindow  map[uint64]time.Duration
	ClientWindow map[int]time.Duration
	HealToServed []time.Duration // per measurable heal: the slowest group's first success after it
}

// HealBudget is how soon after a heal every group must be served again.
const HealBudget = 2 * time.Second

// Availability computes what clients saw between from and to (windows
// counted from each group's and client's first success); heals in that
// span with at least HealBudget+1s of workload after them are measured.
func (w *Workload) Availability(from, to time.Time, heals []time.Time) Availability {
	w.succMu.Lock()
	ss := append([]success(nil), w.successes...)
	w.succMu.Unlock()
	a := Availability{GroupWindow: map[uint64]time.Duration{}, ClientWindow: map[int]time.Duration{}}
	lastG, lastC := map[uint64]time.Time{}, map[int]time.Time{}
	for _, s := range ss {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		// Windows start at each group's and client's first success, so
		// that start-up (connections, sessions) is not counted.
		if last, ok := lastG[s.group]; ok {
			a.GroupWindow[s.group] = max(a.GroupWindow[s.group], s.at.Sub(last))
		}
		if last, ok := lastC[s.client]; ok {
			a.ClientWindow[s.client] = max(a.ClientWindow[s.client], s.at.Sub(last))
		}
		lastG[s.group], lastC[s.client] = s.at, s.at
	}
	for g, t := range lastG {
		a.GroupWindow[g] = max(a.GroupWindow[g], to.Sub(t))
	}
	for _, h := range heals {
		if h.Before(from) || to.Sub(h) < HealBudget+time.Second {
			continue
		}
		worst := time.Duration(0)
		for g := range lastG {
			first := to.Sub(h) // none: the whole remaining span
			for _, s := range ss {
				if s.group == g && !s.at.Before(h) {
					first = s.at.Sub(h)
					break
				}
			}
			worst = max(worst, first)
		}
		a.HealToServed = append(a.HealToServed, worst)
	}
	return a
}

// String summarizes a on one line: each group's longest window without a
// success, the worst client's, and the time to serve every group after
// each heal, rounded to 10ms.
func (a Availability) String() string {
	var b strings.Builder
	b.WriteString("longest window without a success: groups")
	gs := make([]uint64, 0, len(a.GroupWindow))
	for g := range a.GroupWindow {
		gs = append(gs, g)
	}
	slices.Sort(gs)
	for _, g := range gs {
		fmt.Fprintf(&b, " %d:%v", g, a.GroupWindow[g].Round(10*time.Millisecond))
	}
	worst := time.Duration(0)
	for _, d := range a.ClientWindow {
		worst = max(worst, d)
	}
	fmt.Fprintf(&b, "; worst client %v; heal to every group served:", worst.Round(10*time.Millisecond))
	if len(a.HealToServed) == 0 {
		b.WriteString(" no heal measured")
	}
	for _, d := range a.HealToServed {
		fmt.Fprintf(&b, " %v", d.Round(10*time.Millisecond))
	}
	return b.String()
}

// FinalRead reads every key the workload touched, each within budget,
// records the reads in the history, and checks that no appended value
// appears twice.
func (w *Workload) FinalRead(ctx context.Context, ctls []string, budget time.Duration) error {
	cl, err := client.New(ctx, ctls, client.WithDialOptions(w.dial()...))
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
		out, err := w.Rec.Do(rctx, cl, finalReader, linearizability.Input{Op: linearizability.Get, Key: k})
		cancel()
		if err != nil {
			return fmt.Errorf("final read of %s not served within %v of healing: %w", k, budget, err)
		}
		v := out.Value
		for _, tok := range strings.SplitAfter(v, ">") {
			if tok != "" && strings.Count(v, tok) > 1 {
				return fmt.Errorf("key %s holds %s %d times", k, tok, strings.Count(v, tok))
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
