package bench

// B is what ReportClosedLoop needs of a Go benchmark: *testing.B has it
// (the package does not import testing, so the binaries that use it do not
// either).
type B interface {
	ResetTimer()
	StopTimer()
	Fatal(args ...any)
	ReportMetric(n float64, unit string)
}

// ReportClosedLoop runs a Go benchmark's n (b.N) operations through
// ClosedLoop with conc goroutines, timing only them, and reports the
// throughput as "<what>/s" and the median and 99th percentile latencies as
// "p50-ms" and "p99-ms", and the CPU time this whole process used per
// operation as "cpu-µs/op" (getrusage: every member the benchmark runs in
// the process, and the load itself). It fails the benchmark at the first
// error.
func ReportClosedLoop(b B, n, conc int, what string, op func(i int) error) {
	b.ResetTimer()
	cpu := startCPU([]int{0})
	lat, elapsed, err := ClosedLoop(n, conc, op)
	perOp := cpu.perOp(n)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), what+"/s")
	b.ReportMetric(perOp, "cpu-µs/op")
	b.ReportMetric(Percentile(lat, 0.50), "p50-ms")
	b.ReportMetric(Percentile(lat, 0.99), "p99-ms")
}
