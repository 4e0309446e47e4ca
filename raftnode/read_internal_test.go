package raftnode

import (
	"bytes"
	"testing"
)

// TestReadRoundContextsDifferAcrossStarts: a read round's request context
// names the run of the member as well as the round. Round numbers start
// again at 1 with every Start, and an answer to a request of an earlier
// in-process run (still on its way at the restart) must match no round of
// the new run: it could carry a read index older than the new caller.
func TestReadRoundContextsDifferAcrossStarts(t *testing.T) {
	var before, after reads
	before.init()
	after.init()
	_, r1 := before.join()
	_, r2 := after.join()
	if r1 == nil || r2 == nil {
		t.Fatal("the first caller of an idle member starts no round")
	}
	if bytes.Equal(r1.rctx, r2.rctx) {
		t.Fatalf("round 1 of two runs has the same request context %x", r1.rctx)
	}
	// Within one run, every round has its own context.
	before.mu.Lock()
	next := before.startLocked()
	before.mu.Unlock()
	if bytes.Equal(r1.rctx, next.rctx) {
		t.Fatalf("two rounds of one run share the request context %x", r1.rctx)
	}
}
