package groupserver

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shardkv/shardkv/api/kvpb"
)

// What a replica tells its Status callers beyond raft and shard states
// (the web console draws traffic and migrations from it): the latencies of
// the client requests it answered, and the bytes pulled so far of each
// shard it is pulling.

// newRequestLatency is every client request's latency, whatever its
// outcome: one histogram of Prometheus' client (not registered: Status
// reports it), with the buckets of shardkv_requests_seconds.
func newRequestLatency() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "shardkv_status_requests_seconds", Buckets: requestBuckets,
	})
}

// observe records a client request's outcome and latency, until now.
func (s *Server) observe(op string, err error, start time.Time) {
	s.observeUntil(op, err, start, time.Now())
}

// observeUntil records a client request's outcome and latency, from start
// to end.
func (s *Server) observeUntil(op string, err error, start, end time.Time) {
	took := end.Sub(start).Seconds()
	s.latency.Observe(took)
	s.cfg.Metrics.observe(op, err, took)
}

func (s *Server) latencyStatus() *kvpb.Latency {
	var m dto.Metric
	if err := s.latency.Write(&m); err != nil {
		return nil
	}
	h := m.GetHistogram()
	l := &kvpb.Latency{Count: h.GetSampleCount()}
	for _, b := range h.GetBucket() {
		l.UpperMs = append(l.UpperMs, b.GetUpperBound()*1000)
		l.Cumulative = append(l.Cumulative, b.GetCumulativeCount())
	}
	return l
}

// pullProgress counts the bytes pulled so far of each shard being pulled.
type pullProgress struct {
	mu    sync.Mutex
	bytes map[int]uint64 // by shard
}

func (p *pullProgress) set(shard int, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes == nil {
		p.bytes = map[int]uint64{}
	}
	if n < 0 {
		delete(p.bytes, shard)
		return
	}
	p.bytes[shard] = uint64(n)
}

func (p *pullProgress) of(shard int) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes[shard]
}
