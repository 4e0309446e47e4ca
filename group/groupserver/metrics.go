package groupserver

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/group"
)

// requestBuckets are the latency buckets of client requests: 0.1 ms to
// about 13 s, doubling.
var requestBuckets = prometheus.ExponentialBuckets(0.0001, 2, 18)

// Metrics are a group replica's Prometheus measurements. A nil *Metrics
// records nothing.
type Metrics struct {
	requests   *prometheus.HistogramVec
	shards     *prometheus.GaugeVec
	migBytes   prometheus.Counter
	migSeconds prometheus.Histogram
	batches    prometheus.Histogram
}

// NewMetrics registers the group metrics with reg, labelled with the
// replica's group and id.
func NewMetrics(reg prometheus.Registerer, gid, id uint64) *Metrics {
	labels := prometheus.Labels{"group": strconv.FormatUint(gid, 10), "replica": strconv.FormatUint(id, 10)}
	m := &Metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "shardkv_requests_seconds", Help: "Client requests by operation and outcome.",
			ConstLabels: labels, Buckets: requestBuckets,
		}, []string{"op", "outcome"}),
		shards: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shardkv_shards", Help: "Shards by state, as the leader sees them.", ConstLabels: labels,
		}, []string{"state"}),
		migBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardkv_migrated_bytes_total", Help: "Bytes of shard data pulled in.", ConstLabels: labels,
		}),
		migSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shardkv_migration_seconds", Help: "Time to pull one shard.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 20),
		}),
	}
	m.batches = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "shardkv_proposed_writes", Help: "Client writes per proposed log entry (see groupserver's batching).",
		ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(1, 2, 9),
	})
	reg.MustRegister(m.collectors()...)
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.shards, m.migBytes, m.migSeconds, m.batches}
}

// Unregister removes the metrics from reg: the replica no longer runs in
// the process (a node's Unhost), and they would report it as if it did.
func (m *Metrics) Unregister(reg prometheus.Registerer) {
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}

func outcomeLabel(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, kvpb.ErrWrongGroup):
		return "wrong_group"
	case errors.Is(err, kvpb.ErrNotReady):
		return "not_ready"
	}
	return "error"
}

// observe records a client request that took seconds.
func (m *Metrics) observe(op string, err error, seconds float64) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(op, outcomeLabel(err)).Observe(seconds)
}

func (m *Metrics) batched(writes int) {
	if m == nil {
		return
	}
	m.batches.Observe(float64(writes))
}

func (m *Metrics) shardStates(v group.View) {
	if m == nil {
		return
	}
	counts := map[group.ShardState]int{}
	for _, sh := range v.Shards {
		counts[sh.State]++
	}
	for _, st := range []group.ShardState{group.Absent, group.Serving, group.Pulling, group.Offering, group.Confirming, group.Held, group.Restoring} {
		m.shards.WithLabelValues(st.String()).Set(float64(counts[st]))
	}
}

func (m *Metrics) migrated(bytes int, took time.Duration) {
	if m == nil {
		return
	}
	m.migBytes.Add(float64(bytes))
	m.migSeconds.Observe(took.Seconds())
}
