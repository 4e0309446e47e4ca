package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/internal/bench"
)

// benchFlags are bench's flags.
type benchFlags struct {
	target, endpoints        string
	cf                       clusterFlags
	workloads, clients, dist string
	cfg                      bench.Config
	load, leader, firstWrite bool
	etcdConns                int
	out                      *printer
}

func newBenchCmd() *cobra.Command {
	b := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Closed-loop load generator (YCSB A/B/C, write-only, append) against shardkv or etcd",
		Long: `Run closed-loop workloads through the public client and report throughput
and latency percentiles per operation type, with errors by kind.

Workloads: A (50% get, 50% put), B (95/5), C (get only), W (put only),
append (20% get, 80% append). Gets are linearizable on both backends.`,
		Example: `  shardkv bench --workload A,C --clients 16,64,256 --ops 20000 --load
  shardkv bench --target etcd --endpoints 127.0.0.1:2379 --workload W --duration 30s -o json
  shardkv bench --leader        # the address of the leader serving a probe key`,
		Args: cobra.NoArgs,
		RunE: b.run,
	}
	b.register(cmd)
	return setExitCodes(cmd, clientExitCodes)
}

func (b *benchFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&b.target, "target", "shardkv", "backend: shardkv or etcd")
	b.cf.registerTimeout(f, 30*time.Second, "longest wait to connect to shardkv")
	f.StringVar(&b.endpoints, "endpoints", "127.0.0.1:2379", "etcd endpoints")
	f.StringVar(&b.workloads, "workload", "A", "workloads, comma separated: A, B, C, W, append")
	f.StringVar(&b.clients, "clients", "16", "concurrent clients, comma separated for several runs")
	f.StringVar(&b.dist, "dist", "uniform", "key distribution: uniform or zipfian")
	f.IntVar(&b.cfg.Keys, "keys", 10000, "key space size")
	f.IntVar(&b.cfg.ValueSize, "value-size", 256, "value size in bytes")
	f.IntVar(&b.cfg.Ops, "ops", 0, "measured operations per run (0: bounded by --duration only)")
	f.DurationVar(&b.cfg.Duration, "duration", 30*time.Second, "longest measured time per run")
	f.DurationVar(&b.cfg.Warmup, "warmup", 2*time.Second, "unmeasured warm-up per run")
	f.Uint64Var(&b.cfg.Seed, "seed", uint64(time.Now().UnixNano()), "random seed")
	f.IntSliceVar(&b.cfg.ServerPIDs, "server-pids", nil, "the store's process ids: report their CPU time per operation over the measured part of each run (Linux)")
	f.BoolVar(&b.load, "load", false, "write every key once before the runs")
	f.IntVar(&b.etcdConns, "etcd-conns", 8, "etcd target: connections to the etcd leader the load goes through (0: the client's own balancing over --endpoints)")
	f.BoolVar(&b.leader, "leader", false, "print the address of the leader serving the probe key and exit")
	f.BoolVar(&b.firstWrite, "first-write", false, "retry one put until it succeeds, print the seconds it took, and exit")
	b.out = newPrinter(f, formatTable, formatJSON)
}

func (b *benchFlags) run(cmd *cobra.Command, _ []string) error {
	if err := b.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	backend, err := b.backend(cmd)
	if err != nil {
		return err
	}
	defer backend.Close()
	if b.leader || b.firstWrite {
		v, err := b.probe(ctx, backend)
		if err != nil {
			return err
		}
		return b.out.print(cmd.OutOrStdout(), v)
	}
	results, err := b.runs(ctx, backend)
	if err != nil {
		return err
	}
	return b.out.print(cmd.OutOrStdout(), benchView(results))
}

// check refuses bad flag values before anything connects.
func (b *benchFlags) check() error {
	if err := b.out.check(); err != nil {
		return err
	}
	switch b.dist {
	case "uniform":
	case "zipfian":
		b.cfg.Zipfian = true
	default:
		return usagef("--dist %q: want uniform or zipfian", b.dist)
	}
	for _, w := range splitList(b.workloads) {
		if _, ok := bench.Workloads[w]; !ok {
			return usagef("--workload %q: want one of A, B, C, W, append", w)
		}
	}
	for _, c := range splitList(b.clients) {
		if n, err := strconv.Atoi(c); err != nil || n < 1 {
			return usagef("--clients %q: want positive numbers", c)
		}
	}
	return nil
}

// backend connects to the system under test.
func (b *benchFlags) backend(cmd *cobra.Command) (bench.Backend, error) {
	switch b.target {
	case "shardkv":
		var s *bench.Shardkv
		err := b.cf.run(cmd, func(ctx context.Context, addrs []string) error {
			var err error
			s, err = bench.NewShardkv(ctx, addrs, b.cf.tlsDial...)
			return err
		})
		return s, err
	case "etcd":
		conns := b.etcdConns
		if b.leader || b.firstWrite {
			conns = 0 // probes must survive the leader's death
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
		defer cancel()
		return bench.NewEtcd(ctx, splitList(b.endpoints), conns)
	}
	return nil, usagef("--target %q: want shardkv or etcd", b.target)
}

// probe answers --leader or --first-write.
func (b *benchFlags) probe(ctx context.Context, backend bench.Backend) (view, error) {
	if b.firstWrite {
		took, err := bench.FirstWrite(ctx, backend, []byte("failover-probe"), 200*time.Millisecond)
		return lineView{Key: "seconds", Line: fmt.Sprintf("%.3f", took.Seconds()), Value: took.Seconds()}, err
	}
	var addr string
	var err error
	switch s := backend.(type) {
	case *bench.Shardkv:
		addr, err = s.Leader(ctx, []byte("failover-probe"))
	case *bench.Etcd:
		addr, err = s.Leader(ctx)
	}
	return lineView{Key: "leader", Line: addr, Value: addr}, err
}

// runs runs every workload with every client count.
func (b *benchFlags) runs(ctx context.Context, backend bench.Backend) ([]bench.Result, error) {
	if b.load {
		fmt.Fprintf(os.Stderr, "loading %d keys of %d bytes into %s\n", b.cfg.Keys, b.cfg.ValueSize, backend.Name())
		if err := bench.Load(ctx, backend, b.cfg.Keys, b.cfg.ValueSize, 64); err != nil {
			return nil, err
		}
	}
	fi, _ := os.Stderr.Stat()
	b.cfg.Progress, b.cfg.Terminal = os.Stderr, fi != nil && fi.Mode()&os.ModeCharDevice != 0
	var results []bench.Result
	for _, wname := range splitList(b.workloads) {
		w := bench.Workloads[wname]
		for _, c := range splitList(b.clients) {
			n, _ := strconv.Atoi(c) // checked
			run := b.cfg
			run.Workload, run.Concurrency = w, n
			fmt.Fprintf(os.Stderr, "%s workload %s, %d clients\n", backend.Name(), w.Name, n)
			res, err := bench.Run(ctx, backend, run)
			if err != nil {
				return nil, err
			}
			results = append(results, res)
		}
	}
	return results, nil
}

// benchView prints bench's results.
type benchView []bench.Result

func (v benchView) writeTable(w io.Writer) error {
	bench.WriteTable(w, v)
	return nil
}

func (v benchView) jsonValue() any { return []bench.Result(v) }

// lineView is one value: a line in a table, {"key": value} in JSON.
type lineView struct {
	Key   string
	Line  string
	Value any
}

func (v lineView) writeTable(w io.Writer) error {
	_, err := fmt.Fprintln(w, v.Line)
	return err
}

func (v lineView) jsonValue() any { return map[string]any{v.Key: v.Value} }
