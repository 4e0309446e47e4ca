package kvpb

import (
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// MaxBatchOps is the most ops a KV.Batch call may carry; a larger batch
// is refused whole, as malformed.
const MaxBatchOps = 128

// Batches stay well below gRPC's message limit (16 MiB) both ways, with
// values of up to 1 MiB: a client cuts a batch before its ops' requests
// pass MaxBatchRequestBytes, and a replica answers the Gets whose values
// would take a reply past MaxBatchReplyBytes with ErrBatchFull (a write
// returning its value gets its answer without it: ValueReturned false).
const (
	// MaxBatchRequestBytes is the most bytes of encoded requests a client
	// puts in one batch: 4 MiB. A larger op goes in a batch of its own.
	MaxBatchRequestBytes = 4 << 20
	// MaxBatchReplyBytes is the most bytes of encoded results a replica
	// puts in one batch's reply: 8 MiB.
	MaxBatchReplyBytes = 8 << 20
)

// ErrorResult is the result of a batched op that failed with err: the
// gRPC status its own call would have ended with, details included.
func ErrorResult(err error) *BatchResult {
	b, merr := proto.Marshal(status.Convert(err).Proto())
	if merr != nil {
		b, _ = proto.Marshal(status.New(codes.Internal, err.Error()).Proto())
	}
	return &BatchResult{Result: &BatchResult_Error{Error: b}}
}

// Err returns the error of a batched op's result (as its own call would
// have returned it: a gRPC status error), or nil if it succeeded.
func (r *BatchResult) Err() error {
	e, ok := r.GetResult().(*BatchResult_Error)
	if !ok {
		return nil
	}
	st := &spb.Status{}
	if err := proto.Unmarshal(e.Error, st); err != nil {
		return status.Errorf(codes.Internal, "kv: undecodable error of a batched op: %v", err)
	}
	if st.GetCode() == int32(codes.OK) {
		return status.Error(codes.Internal, "kv: a batched op failed without an error code")
	}
	return status.ErrorProto(st)
}
