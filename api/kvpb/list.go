package kvpb

import (
	"bytes"
	"fmt"

	"github.com/shardkv/shardkv/api/rpcerr"
)

// MaxListBytes bounds the keys' and values' bytes of one List reply: a
// request asking for more (or for 0) gets this. With one key of at most
// DefaultMaxKeySize and one value of at most DefaultMaxValueSize past it,
// a reply stays well below the 16 MiB message limit.
const MaxListBytes = 4 << 20

// PrefixEnd returns the smallest key greater than every key with prefix p,
// so that the keys with prefix p are the range [p, PrefixEnd(p)); nil (no
// upper bound) when p is empty or all 0xff.
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// CheckList validates a List request (rpcerr.ErrMalformed, ErrKeyTooLarge):
// at least one shard, each once and below numShards (when known, > 0);
// start, end and after at most maxKey bytes.
func CheckList(req *ListRequest, numShards, maxKey int) error {
	shards := req.GetShards()
	if len(shards) == 0 {
		return fmt.Errorf("%w: a listing names at least one shard", rpcerr.ErrMalformed)
	}
	seen := make(map[uint32]bool, len(shards))
	for _, s := range shards {
		if seen[s] {
			return fmt.Errorf("%w: shard %d named twice", rpcerr.ErrMalformed, s)
		}
		if numShards > 0 && int(s) >= numShards {
			return fmt.Errorf("%w: shard %d of %d", rpcerr.ErrMalformed, s, numShards)
		}
		seen[s] = true
	}
	for _, k := range [][]byte{req.GetStart(), req.GetEnd(), req.GetAfter()} {
		if len(k) > maxKey {
			return fmt.Errorf("%w: a listing bound of %d bytes, limit %d", ErrKeyTooLarge, len(k), maxKey)
		}
	}
	return nil
}

// ListFrom returns the first key a List request may return: the larger of
// its start and the smallest key after its cursor (after + 0x00).
func ListFrom(req *ListRequest) []byte {
	from := req.GetStart()
	if a := req.GetAfter(); len(a) > 0 && bytes.Compare(append(a[:len(a):len(a)], 0), from) > 0 {
		from = append(a[:len(a):len(a)], 0)
	}
	return from
}
