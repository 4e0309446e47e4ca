package bench

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// memory is an in-process backend: a map behind a mutex, failing every
// failEvery-th put.
type memory struct {
	mu        sync.Mutex
	data      map[string][]byte
	gets      int
	puts      int
	appends   int
	failEvery int
}

func (m *memory) Name() string { return "memory" }
func (m *memory) Get(context.Context, []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gets++
	return nil
}
func (m *memory) Put(_ context.Context, k, v []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts++
	if m.failEvery > 0 && m.puts%m.failEvery == 0 {
		return errors.New("injected: disk full")
	}
	if m.data == nil {
		m.data = map[string][]byte{}
	}
	m.data[string(k)] = v
	return nil
}
func (m *memory) Append(context.Context, []byte, []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.appends++
	return nil
}
func (m *memory) Close() error { return nil }

func TestRunMixAndCounts(t *testing.T) {
	m := &memory{failEvery: 10}
	res, err := Run(context.Background(), m, Config{Workload: Workloads["B"], Keys: 100, Concurrency: 4, Ops: 5000, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	got := res.Latency["get"].Count + res.Latency["put"].Count
	if got < 5000 || res.Ops != got {
		t.Fatalf("measured %d ops (result says %d), want at least 5000", got, res.Ops)
	}
	if frac := float64(res.Latency["get"].Count) / float64(got); frac < 0.93 || frac > 0.97 {
		t.Fatalf("workload B read fraction %.3f", frac)
	}
	if res.Errors["put: injected"] == 0 {
		t.Fatalf("errors not counted by kind: %v", res.Errors)
	}
	if p := res.Latency["get"]; !(p.P50 <= p.P90 && p.P90 <= p.P99 && p.P99 <= p.P999) {
		t.Fatalf("percentiles out of order: %+v", p)
	}
}

func TestRunStopsByDurationAndLoads(t *testing.T) {
	m := &memory{}
	if err := Load(context.Background(), m, 50, 8, 3); err != nil {
		t.Fatal(err)
	}
	if len(m.data) != 50 {
		t.Fatalf("loaded %d keys", len(m.data))
	}
	start := time.Now()
	res, err := Run(context.Background(), m, Config{Workload: Workloads["append"], Keys: 50, Zipfian: true,
		Concurrency: 2, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("duration-bounded run took %v", el)
	}
	if res.Latency["append"].Count == 0 {
		t.Fatal("append-heavy workload made no appends")
	}
}
