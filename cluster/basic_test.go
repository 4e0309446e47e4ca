package cluster_test

import (
	"testing"

	"github.com/shardkv/shardkv/cluster"
)

func TestJoinLeave(t *testing.T) {
	h := start(t, cluster.Options{Groups: 3})
	h.join(1)
	cl := h.client()
	ks := keys(20)
	want := map[string]string{}
	for _, k := range ks {
		h.put(cl, k, k+"|")
		want[k] = k + "|"
	}
	step := func(label string) {
		t.Helper()
		for _, k := range ks {
			h.check(cl, k, want[k])
			h.appendTo(cl, k, label)
			want[k] += label
		}
	}
	h.join(2)
	step("a")
	h.join(3)
	step("b")
	h.leave(1)
	step("c")
	h.leave(2)
	step("d")
	// Once the handoff is complete, the groups that left can be shut down:
	// everything lives on group 3.
	h.waitSettled()
	h.c.StopGroup(1)
	h.c.StopGroup(2)
	for _, k := range ks {
		h.check(cl, k, want[k])
	}
}
