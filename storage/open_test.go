package storage

import "testing"

// openEngine opens the engine in dir with o, ending the test or benchmark
// when it cannot; the caller closes it.
func openEngine(tb testing.TB, dir string, o Options) *Engine {
	tb.Helper()
	e, err := OpenWith(dir, o)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}
