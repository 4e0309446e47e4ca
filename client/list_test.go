package client

import (
	"slices"
	"strings"
	"testing"

	"github.com/shardkv/shardkv/api/kvpb"
)

// answer is a group's part of a page: its keys, and whether it was cut
// short.
func answer(more bool, keys ...string) *kvpb.ListReply {
	r := &kvpb.ListReply{More: more}
	for _, k := range keys {
		r.Kvs = append(r.Kvs, &kvpb.KeyValue{Key: []byte(k)})
	}
	return r
}

// TestMergePage: a page is the groups' answers in byte order, up to the
// limit and never past the smallest last key of an answer cut short
// (past it, that group's keys were not read).
func TestMergePage(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts []*kvpb.ListReply
		limit int
		want  string
		more  bool
	}{
		{"complete answers", []*kvpb.ListReply{answer(false, "b", "d"), answer(false, "a", "c")}, 10, "a b c d", false},
		{"the limit", []*kvpb.ListReply{answer(false, "b", "d"), answer(false, "a", "c")}, 3, "a b c", true},
		{"exactly the limit", []*kvpb.ListReply{answer(false, "b"), answer(false, "a")}, 2, "a b", false},
		{"cut short: nothing past its last key", []*kvpb.ListReply{answer(true, "a", "c"), answer(false, "b", "d", "e")}, 10, "a b c", true},
		{"the smallest cut", []*kvpb.ListReply{answer(true, "a", "e"), answer(true, "b", "c"), answer(false, "d")}, 10, "a b c", true},
		{"no limit", []*kvpb.ListReply{answer(false, "b"), answer(false, "a")}, 0, "a b", false},
		{"empty", []*kvpb.ListReply{answer(false), answer(false)}, 10, "", false},
	} {
		page := mergePage(tc.parts, tc.limit)
		var got []string
		for _, kv := range page.KVs {
			got = append(got, string(kv.Key))
		}
		want := strings.Fields(tc.want)
		if !slices.Equal(got, want) || page.More != tc.more {
			t.Errorf("%s: %q more=%v, want %q more=%v", tc.name, got, page.More, want, tc.more)
		}
		wantNext := ""
		if len(want) > 0 {
			wantNext = want[len(want)-1]
		}
		if string(page.Next) != wantNext {
			t.Errorf("%s: next %q, want %q (the last key)", tc.name, page.Next, wantNext)
		}
	}
}
