package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/bench"
)

func newBenchCmd() *cobra.Command {
	var (
		target, endpoints, controllers string
		workloads, clients, dist       string
		output                         string
		cfg                            bench.Config
		load, leader, firstWrite       bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Closed-loop load generator (YCSB A/B/C, write-only, append) against shardkv or etcd",
		Long: `Run closed-loop workloads through the public client and report throughput
and latency percentiles per operation type, with errors by kind.

Workloads: A (50% get, 50% put), B (95/5), C (get only), W (put only),
append (20% get, 80% append). Gets are linearizable on both backends.`,
		Example: `  shardkv bench --workload A,C --clients 16,64,256 --ops 20000 --load
  shardkv bench --target etcd --endpoints 127.0.0.1:2379 --workload W --duration 30s -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			var b bench.Backend
			var err error
			switch target {
			case "shardkv":
				cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
				b, err = bench.NewShardkv(cctx, splitList(controllers))
				ccancel()
			case "etcd":
				b, err = bench.NewEtcd(splitList(endpoints))
			default:
				return fmt.Errorf("--target %q: want shardkv or etcd", target)
			}
			if err != nil {
				return err
			}
			defer b.Close()
			switch dist {
			case "uniform":
			case "zipfian":
				cfg.Zipfian = true
			default:
				return fmt.Errorf("--dist %q: want uniform or zipfian", dist)
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			switch {
			case leader:
				var addr string
				switch b := b.(type) {
				case *bench.Shardkv:
					addr, err = b.Leader(ctx, []byte("failover-probe"))
				case *bench.Etcd:
					addr, err = b.Leader(ctx)
				}
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), addr)
				return nil
			case firstWrite:
				took, err := bench.FirstWrite(ctx, b, []byte("failover-probe"), 200*time.Millisecond)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%.3f\n", took.Seconds())
				return nil
			}
			if load {
				fmt.Fprintf(os.Stderr, "loading %d keys of %d bytes into %s\n", cfg.Keys, cfg.ValueSize, b.Name())
				if err := bench.Load(ctx, b, cfg.Keys, cfg.ValueSize, 64); err != nil {
					return err
				}
			}
			fi, _ := os.Stderr.Stat()
			cfg.Progress, cfg.Terminal = os.Stderr, fi != nil && fi.Mode()&os.ModeCharDevice != 0
			var results []bench.Result
			for _, wname := range splitList(workloads) {
				w, ok := bench.Workloads[wname]
				if !ok {
					return fmt.Errorf("--workload %q: want one of A, B, C, W, append", wname)
				}
				for _, c := range splitList(clients) {
					n, err := strconv.Atoi(c)
					if err != nil || n < 1 {
						return fmt.Errorf("--clients %q: want positive numbers", c)
					}
					run := cfg
					run.Workload, run.Concurrency = w, n
					fmt.Fprintf(os.Stderr, "%s workload %s, %d clients\n", b.Name(), w.Name, n)
					res, err := bench.Run(ctx, b, run)
					if err != nil {
						return err
					}
					results = append(results, res)
				}
			}
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), results)
			}
			bench.WriteTable(cmd.OutOrStdout(), results)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&target, "target", "shardkv", "backend: shardkv or etcd")
	f.StringVar(&controllers, "controllers", defaultControllers, "shardkv controller addresses")
	f.StringVar(&endpoints, "endpoints", "127.0.0.1:2379", "etcd endpoints")
	f.StringVar(&workloads, "workload", "A", "workloads, comma separated: A, B, C, W, append")
	f.StringVar(&clients, "clients", "16", "concurrent clients, comma separated for several runs")
	f.StringVar(&dist, "dist", "uniform", "key distribution: uniform or zipfian")
	f.IntVar(&cfg.Keys, "keys", 10000, "key space size")
	f.IntVar(&cfg.ValueSize, "value-size", 256, "value size in bytes")
	f.IntVar(&cfg.Ops, "ops", 0, "measured operations per run (0: bounded by --duration only)")
	f.DurationVar(&cfg.Duration, "duration", 30*time.Second, "longest measured time per run")
	f.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured warm-up per run")
	f.Uint64Var(&cfg.Seed, "seed", uint64(time.Now().UnixNano()), "random seed")
	f.BoolVar(&load, "load", false, "write every key once before the runs")
	f.StringVarP(&output, "output", "o", "table", "output: table or json")
	f.BoolVar(&leader, "leader", false, "print the address of the leader serving the probe key and exit")
	f.BoolVar(&firstWrite, "first-write", false, "retry one put until it succeeds, print the seconds it took, and exit")
	return cmd
}
