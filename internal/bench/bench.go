// Package bench is shardkv's closed-loop load generator: a fixed number of
// clients, each issuing its next operation as soon as the previous one
// returns, against a Backend (shardkv through its public client, or etcd
// for comparison), with YCSB-style workloads.
//
// Latencies are recorded per operation, exactly, and reported as
// percentiles per operation type; errors are counted by kind. A run is
// bounded by an operation count and a duration, whichever comes first, and
// starts with an unmeasured warm-up.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is a store under test. Implementations must be safe for
// concurrent use.
type Backend interface {
	Name() string
	Get(ctx context.Context, key []byte) error // a linearizable read
	Put(ctx context.Context, key, value []byte) error
	// Append appends to a key; backends without it return ErrUnsupported.
	Append(ctx context.Context, key, value []byte) error
	Close() error
}

// ErrUnsupported is returned by a backend for an operation it lacks.
var ErrUnsupported = errors.New("bench: operation not supported by this backend")

// Workload is a mix of operations.
type Workload struct {
	Name   string
	Read   float64 // fraction of gets
	Append float64 // fraction of appends; the rest are puts
}

// Workloads are the standard mixes: YCSB A, B and C, write-only W, and an
// append-heavy mix.
var Workloads = map[string]Workload{
	"A":      {Name: "A", Read: 0.5},
	"B":      {Name: "B", Read: 0.95},
	"C":      {Name: "C", Read: 1},
	"W":      {Name: "W", Read: 0},
	"append": {Name: "append", Read: 0.2, Append: 0.8},
}

// Config describes one run.
type Config struct {
	Workload    Workload
	Keys        int           // key space size (default 10,000)
	ValueSize   int           // bytes per value (default 256)
	Zipfian     bool          // zipfian key choice (s = 1.01) instead of uniform
	Concurrency int           // clients (default 16)
	Ops         int           // stop after this many measured operations (0: no limit)
	Duration    time.Duration // stop after this long (0: no limit; one of Ops and Duration is required)
	Warmup      time.Duration // unmeasured operations first
	Timeout     time.Duration // per operation (default 10s)
	Seed        uint64
	// ServerPIDs are the store's processes, whose CPU time over the
	// measured part of the run is reported per operation (Linux).
	ServerPIDs []int
	// Progress, if set, receives progress: a bar redrawn in place when
	// Terminal is true, a plain line every few seconds otherwise.
	Progress io.Writer
	Terminal bool
}

func (c *Config) defaults() error {
	c.Keys = cmp.Or(c.Keys, 10000)
	c.ValueSize = cmp.Or(c.ValueSize, 256)
	c.Concurrency = cmp.Or(c.Concurrency, 16)
	c.Timeout = cmp.Or(c.Timeout, 10*time.Second)
	if c.Ops == 0 && c.Duration == 0 {
		return errors.New("bench: set an operation count or a duration")
	}
	return nil
}

// Key returns the i-th key of the key space.
func Key(i int) []byte { return fmt.Appendf(nil, "bench-%08d", i) }

// Percentiles of one operation type, in milliseconds.
type Percentiles struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
}

// Result is the outcome of a run.
type Result struct {
	Backend     string                 `json:"backend"`
	Workload    string                 `json:"workload"`
	Concurrency int                    `json:"concurrency"`
	Ops         int                    `json:"ops"`
	Seconds     float64                `json:"seconds"`
	Throughput  float64                `json:"ops_per_second"`
	Latency     map[string]Percentiles `json:"latency"`
	Errors      map[string]int         `json:"errors"`
	// ServerCPU is the CPU time Config.ServerPIDs used over the measured
	// part of the run per measured operation, in microseconds (0 when
	// not measured); ClientCPU the same for the load generator's process.
	ServerCPU float64 `json:"server_cpu_us_per_op"`
	ClientCPU float64 `json:"client_cpu_us_per_op"`
}

// Load writes every key of the key space once, with concurrency clients.
func Load(ctx context.Context, b Backend, keys, valueSize, concurrency int) error {
	value := make([]byte, valueSize)
	_, _, err := ClosedLoop(keys, concurrency, func(i int) error {
		if err := b.Put(ctx, Key(i), value); err != nil {
			return fmt.Errorf("load key %d: %w", i, err)
		}
		return nil
	})
	return err
}

type sample struct {
	op  string
	lat time.Duration
}

// Run runs the workload against b and returns its measurements.
func Run(ctx context.Context, b Backend, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	r := &run{cfg: cfg, b: b, value: make([]byte, cfg.ValueSize), errs: map[string]int{},
		perWorker: make([][]sample, cfg.Concurrency)}
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Go(func() { r.worker(ctx, w) })
	}
	if cfg.Warmup > 0 {
		select {
		case <-time.After(cfg.Warmup):
		case <-ctx.Done():
		}
	}
	r.measuring.Store(true)
	start := time.Now()
	var server *cpuMeter
	if len(cfg.ServerPIDs) > 0 {
		server = startCPU(cfg.ServerPIDs)
	}
	client := startCPU([]int{0})
	progressDone := make(chan struct{})
	go progress(cfg, start, &r.done, &r.stop, progressDone)
	if cfg.Duration > 0 {
		go func() {
			select {
			case <-time.After(cfg.Duration):
			case <-progressDone:
			}
			r.stop.Store(true)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(progressDone)
	res := r.result(elapsed)
	res.ServerCPU, res.ClientCPU = server.perOp(res.Ops), client.perOp(res.Ops)
	return res, ctx.Err()
}

// run is one benchmark run: closed-loop workers and what they measured.
type run struct {
	cfg   Config
	b     Backend
	value []byte

	measuring, stop atomic.Bool
	done            atomic.Int64 // operations measured

	errMu sync.Mutex
	errs  map[string]int // "op: kind" -> count

	perWorker [][]sample // each worker appends to its own
}

// worker issues operations one after another until the run stops.
func (r *run) worker(ctx context.Context, w int) {
	rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(w)))
	var zipf *rand.Zipf
	if r.cfg.Zipfian {
		zipf = rand.NewZipf(rng, 1.01, 1, uint64(r.cfg.Keys-1))
	}
	for !r.stop.Load() && ctx.Err() == nil {
		k := 0
		if zipf != nil {
			k = int(zipf.Uint64())
		} else {
			k = rng.IntN(r.cfg.Keys)
		}
		op, p := "put", rng.Float64()
		switch {
		case p < r.cfg.Workload.Read:
			op = "get"
		case p < r.cfg.Workload.Read+r.cfg.Workload.Append:
			op = "append"
		}
		start := time.Now()
		err := r.do(ctx, op, Key(k))
		lat := time.Since(start)
		if !r.measuring.Load() {
			continue
		}
		if err != nil {
			r.errMu.Lock()
			r.errs[op+": "+errorKind(err)]++
			r.errMu.Unlock()
			continue
		}
		r.perWorker[w] = append(r.perWorker[w], sample{op, lat})
		if n := r.done.Add(1); r.cfg.Ops > 0 && int(n) >= r.cfg.Ops {
			r.stop.Store(true)
		}
	}
}

// do runs one operation within the run's per-operation timeout.
func (r *run) do(ctx context.Context, op string, key []byte) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	switch op {
	case "get":
		return r.b.Get(ctx, key)
	case "append":
		return r.b.Append(ctx, key, r.value[:min(16, len(r.value))])
	}
	return r.b.Put(ctx, key, r.value)
}

// result summarizes the measured operations.
func (r *run) result(elapsed time.Duration) Result {
	byOp := map[string][]time.Duration{}
	total := 0
	for _, ss := range r.perWorker {
		for _, s := range ss {
			byOp[s.op] = append(byOp[s.op], s.lat)
			total++
		}
	}
	res := Result{Backend: r.b.Name(), Workload: r.cfg.Workload.Name, Concurrency: r.cfg.Concurrency, Ops: total,
		Seconds: elapsed.Seconds(), Throughput: float64(total) / elapsed.Seconds(), Latency: map[string]Percentiles{}, Errors: r.errs}
	for op, lats := range byOp {
		slices.Sort(lats)
		res.Latency[op] = Percentiles{Count: len(lats), P50: pct(lats, 0.50), P90: pct(lats, 0.90), P99: pct(lats, 0.99), P999: pct(lats, 0.999)}
	}
	return res
}

func pct(sorted []time.Duration, q float64) float64 {
	i := int(q * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i].Microseconds()) / 1000
}

func errorKind(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, ErrUnsupported):
		return "unsupported"
	}
	msg := err.Error()
	if i := strings.IndexAny(msg, ":("); i > 0 {
		msg = msg[:i]
	}
	return msg
}

func progress(cfg Config, start time.Time, done *atomic.Int64, stop *atomic.Bool, finished <-chan struct{}) {
	if cfg.Progress == nil {
		return
	}
	every := 5 * time.Second
	if cfg.Terminal {
		every = 200 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-finished:
			if cfg.Terminal {
				fmt.Fprintln(cfg.Progress)
			}
			return
		case <-t.C:
		}
		n, el := done.Load(), time.Since(start)
		frac := 0.0
		if cfg.Ops > 0 {
			frac = float64(n) / float64(cfg.Ops)
		}
		if cfg.Duration > 0 {
			frac = max(frac, float64(el)/float64(cfg.Duration))
		}
		frac = min(frac, 1)
		rate := float64(n) / el.Seconds()
		if cfg.Terminal {
			bar := strings.Repeat("█", int(frac*30)) + strings.Repeat("·", 30-int(frac*30))
			fmt.Fprintf(cfg.Progress, "\r%s %3.0f%%  %d ops  %.0f ops/s ", bar, frac*100, n, rate)
		} else {
			fmt.Fprintf(cfg.Progress, "%s: %d ops, %.0f ops/s, %.0f%%\n", el.Round(time.Second), n, rate, frac*100)
		}
	}
}

// WriteTable prints results as an aligned table.
func WriteTable(w io.Writer, results []Result) {
	fmt.Fprintf(w, "%-8s %-8s %7s %9s %10s %9s %9s  %-6s %8s %8s %8s %8s  %s\n",
		"backend", "workload", "clients", "ops", "ops/s", "srv µs/op", "gen µs/op", "op", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors")
	for _, r := range results {
		ops := make([]string, 0, len(r.Latency))
		for op := range r.Latency {
			ops = append(ops, op)
		}
		sort.Strings(ops)
		var errParts []string
		for k, v := range r.Errors {
			errParts = append(errParts, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(errParts)
		for i, op := range ops {
			p := r.Latency[op]
			if i == 0 {
				fmt.Fprintf(w, "%-8s %-8s %7d %9d %10.0f %9.0f %9.0f  ", r.Backend, r.Workload, r.Concurrency, r.Ops, r.Throughput, r.ServerCPU, r.ClientCPU)
			} else {
				fmt.Fprintf(w, "%-8s %-8s %7s %9s %10s %9s %9s  ", "", "", "", "", "", "", "")
			}
			errs := ""
			if i == 0 {
				errs = strings.Join(errParts, " ")
			}
			fmt.Fprintf(w, "%-6s %8.2f %8.2f %8.2f %8.2f  %s\n", op, p.P50, p.P90, p.P99, p.P999, errs)
		}
	}
}

// ClosedLoop runs n operations from conc goroutines, each starting its next
// operation when the previous returns, and returns every latency sorted and
// the elapsed time. It stops at the first error. Go benchmarks use it with
// b.N operations.
func ClosedLoop(n, conc int, op func(i int) error) (sorted []time.Duration, elapsed time.Duration, err error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var errOnce sync.Once
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				t0 := time.Now()
				if e := op(i); e != nil {
					errOnce.Do(func() { err = e })
					next.Store(int64(n))
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed = time.Since(start)
	slices.Sort(lat)
	return lat, elapsed, err
}

// Percentile returns the q-quantile (0..1) of sorted latencies in
// milliseconds.
func Percentile(sorted []time.Duration, q float64) float64 { return pct(sorted, q) }
