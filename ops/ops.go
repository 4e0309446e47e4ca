// Package ops serves a process's operational HTTP endpoints: Prometheus
// metrics, health and readiness checks, and pprof.
//
// A process starts it with
//
//	reg := ops.NewRegistry()
//	ops.RegisterStorage(reg, engine)
//	addr, err := ops.Serve(ctx, ":8080", reg, ready, slog.Default(), nil)
//
// and registers each raft node it runs with RegisterRaft.
package ops

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// RegisterRaft exports a raft node's term, commit and applied indexes and
// leadership, labelled with its group and replica id. unregister removes
// them (the replica no longer runs in the process).
func RegisterRaft(reg prometheus.Registerer, gid, id uint64, node func() *raftnode.Node) (unregister func()) {
	labels := prometheus.Labels{"group": strconv.FormatUint(gid, 10), "replica": strconv.FormatUint(id, 10)}
	gauge := func(name, help string, get func(raftnode.Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 {
			n := node()
			if n == nil {
				return 0
			}
			return get(n.Status())
		})
	}
	one := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	cs := []prometheus.Collector{
		gauge("shardkv_raft_term", "Current raft term.", func(s raftnode.Status) float64 { return float64(s.Term) }),
		gauge("shardkv_raft_commit_index", "Raft commit index.", func(s raftnode.Status) float64 { return float64(s.Commit) }),
		gauge("shardkv_raft_applied_index", "Applied index.", func(s raftnode.Status) float64 { return float64(s.Applied) }),
		gauge("shardkv_raft_is_leader", "1 when this replica leads its group.", func(s raftnode.Status) float64 { return one(s.IsLeader) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shardkv_raft_proposals_dropped_total",
			Help: "Proposals that certainly failed (dropped by raft or overwritten).", ConstLabels: labels}, func() float64 {
			if n := node(); n != nil {
				return float64(n.Status().ProposalsDropped)
			}
			return 0
		}),
		gauge("shardkv_raft_has_leader", "1 when this replica knows a leader.", func(s raftnode.Status) float64 { return one(s.Leader != 0) }),
		gauge("shardkv_raft_quiesced", "1 while this replica's group is idle and it neither ticks nor heartbeats.",
			func(s raftnode.Status) float64 { return one(s.Quiesced) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shardkv_raft_quiescences_total",
			Help: "Times this replica quiesced (a fast rise means a group that wakes and sleeps again and again).", ConstLabels: labels}, func() float64 {
			if n := node(); n != nil {
				return float64(n.Status().Quiescences)
			}
			return 0
		}),
	}
	reg.MustRegister(cs...)
	return func() {
		for _, c := range cs {
			reg.Unregister(c)
		}
	}
}

// RegisterStorage exports an engine's health: whether it accepts writes,
// Pebble's write stalls, background errors and slow-disk events.
func RegisterStorage(reg prometheus.Registerer, e *storage.Engine) {
	labels := prometheus.Labels{"dir": e.Dir()}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shardkv_storage_writable",
			Help: "1 when the engine accepts writes; 0 when its disk is full or writes are stuck.", ConstLabels: labels}, func() float64 {
			if e.Health() != nil {
				return 0
			}
			return 1
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shardkv_storage_write_stalled",
			Help: "1 while Pebble stalls writes.", ConstLabels: labels}, func() float64 {
			if e.HealthStats().Stalled {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shardkv_storage_write_stalls_total",
			Help: "Pebble write stalls begun.", ConstLabels: labels}, func() float64 { return float64(e.HealthStats().WriteStalls) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shardkv_storage_background_errors_total",
			Help: "Pebble background errors (failed flushes and compactions).", ConstLabels: labels}, func() float64 {
			return float64(e.HealthStats().BackgroundErrors)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shardkv_storage_disk_slow_total",
			Help: "Disk operations Pebble reported slow.", ConstLabels: labels}, func() float64 { return float64(e.HealthStats().DiskSlow) }),
	)
}

// Serve listens on addr and serves /metrics, /healthz (the process is up),
// /readyz (ready reports true) and /debug/pprof until ctx ends, and every
// other path from ui when it is not nil (the web console, see package
// console). It returns the address it listens on (useful with port 0)
// once listening; serving continues in the background.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, ready func() bool, log *slog.Logger, ui http.Handler) (net.Addr, error) {
	mux := http.NewServeMux()
	if ui != nil {
		mux.Handle("/", ui)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil && !ready() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return lis.Addr(), nil
}
