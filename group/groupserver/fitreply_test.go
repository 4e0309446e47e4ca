package groupserver

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
)

// TestBatchReplyStaysWithinItsBudget: past kvpb.MaxBatchReplyBytes a
// batched Get is answered BATCH_FULL (to be read alone) and a write that
// returns its value answers without it, so that a batch of large values
// never makes a reply gRPC cannot send (which would fail every op of it,
// writes applied included).
func TestBatchReplyStaysWithinItsBudget(t *testing.T) {
	value := make([]byte, 1<<20)
	var results []*kvpb.BatchResult
	for range 12 {
		results = append(results, &kvpb.BatchResult{Result: &kvpb.BatchResult_Get{Get: &kvpb.GetReply{Value: value, Found: true, Version: 1}}})
	}
	results = append(results, &kvpb.BatchResult{Result: &kvpb.BatchResult_Write{Write: &kvpb.WriteReply{Succeeded: true, Version: 2, Value: value, ValueReturned: true}}})
	fitReply(results)
	if size := proto.Size(&kvpb.BatchReply{Results: results}); size > kvpb.MaxBatchReplyBytes+64 {
		t.Fatalf("a reply of %d bytes, budget %d", size, kvpb.MaxBatchReplyBytes)
	}
	full := 0
	for i, r := range results[:12] {
		switch err := r.Err(); {
		case err == nil && len(r.GetGet().GetValue()) == len(value):
			if full > 0 {
				t.Errorf("get %d answered after an earlier one was left out", i)
			}
		case errors.Is(kvpb.Errors.FromStatus(err), kvpb.ErrBatchFull):
			full++
		default:
			t.Errorf("get %d: %v", i, err)
		}
	}
	if full == 0 || full == 12 {
		t.Errorf("%d of 12 gets of 1 MiB left out of an 8 MiB reply", full)
	}
	w := results[12].GetWrite()
	if !w.GetSucceeded() || w.GetVersion() != 2 || w.GetValueReturned() || w.GetValue() != nil {
		t.Errorf("the write past the budget: %v, want its answer without the value", w)
	}
}
