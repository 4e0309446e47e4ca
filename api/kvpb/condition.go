package kvpb

import (
	"fmt"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// HasCondition reports whether w is conditional (if_version or if_value
// set).
func HasCondition(w *WriteRequest) bool {
	return w.IfVersion != nil || w.IfValue != nil
}

// CheckCondition validates a write's condition (rpcerr.ErrMalformed,
// ErrValueTooLarge): at most one of if_version and if_value, none on an
// OPEN_SESSION, and an if_value of at most maxValue bytes.
func CheckCondition(w *WriteRequest, maxValue int) error {
	switch {
	case !HasCondition(w):
		return nil
	case w.IfVersion != nil && w.IfValue != nil:
		return fmt.Errorf("%w: a write has at most one condition (if_version or if_value)", rpcerr.ErrMalformed)
	case w.GetOp() == WriteOp_WRITE_OP_OPEN_SESSION:
		return fmt.Errorf("%w: opening a session takes no condition", rpcerr.ErrMalformed)
	case len(w.IfValue) > maxValue:
		return fmt.Errorf("%w: if_value of %d bytes, limit %d", ErrValueTooLarge, len(w.IfValue), maxValue)
	}
	return nil
}
