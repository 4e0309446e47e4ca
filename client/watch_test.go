package client

import (
	"fmt"
	"testing"
)

// TestCursorCountsChangesOfOneEntry: a batch entry's changes share its
// index; each is new once, and a resume in the middle of the entry (after
// the index before it) drops only the ones already received.
func TestCursorCountsChangesOfOneEntry(t *testing.T) {
	cu := &cursor{started: true, after: 10}
	var got []bool
	for _, i := range []uint64{12, 12, 12, 9, 10} {
		got = append(got, cu.next(i))
	}
	if fmt.Sprint(got) != "[true true true false false]" || cu.after != 10 {
		t.Fatalf("first stream: %v, after %d", got, cu.after)
	}
	cu.skip = cu.n // the stream ends; the resume is after 10
	got = nil
	for _, i := range []uint64{12, 12, 12, 12, 12, 13} {
		got = append(got, cu.next(i))
	}
	if fmt.Sprint(got) != "[false false false true true true]" || cu.after != 12 {
		t.Fatalf("resumed: %v, after %d", got, cu.after)
	}
}
