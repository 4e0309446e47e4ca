package group

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/storage"
)

// A key's stored value ('d' <shard:4> <key>, see the package doc) is its
// version, an unsigned varint, followed by the value's bytes:
//
//	<version:uvarint> <value>
//
// One Pebble key holds both, so a read is one lookup, and everything that
// moves a shard's data (handoff chunks, snapshot images, backups) moves
// the versions with it. The version is etcd's per-key version: 1 when the
// key is created, +1 at every put or append; a delete removes the key, so
// a later put starts again at 1. (Since storage.DataFormat 3; format 2
// stored the bare value.)

// encodeValue returns the stored form of value at version.
func encodeValue(version uint64, value []byte) []byte {
	return appendValue(make([]byte, 0, binary.MaxVarintLen64+len(value)), version, value)
}

// appendValue appends the stored form of value at version to dst.
func appendValue(dst []byte, version uint64, value []byte) []byte {
	return append(binary.AppendUvarint(dst, version), value...)
}

// decodeValue splits a stored value into its version and value (which
// aliases stored).
func decodeValue(stored []byte) (version uint64, value []byte, err error) {
	version, n := binary.Uvarint(stored)
	if n <= 0 || version == 0 {
		return 0, nil, fmt.Errorf("group: stored value has no valid version (%d bytes)", len(stored))
	}
	return version, stored[n:], nil
}

// getValue reads key's value and version from r; version 0 when the key
// does not exist.
func getValue(r pebble.Reader, k []byte) (version uint64, value []byte, err error) {
	stored, found, err := storage.Get(r, k)
	if err != nil || !found {
		return 0, nil, err
	}
	return decodeValue(stored)
}

// getVersion reads key's version from r, without copying its value;
// version 0 when the key does not exist.
func getVersion(r pebble.Reader, k []byte) (version uint64, err error) {
	stored, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	version, _, err = decodeValue(stored)
	return version, err
}

// keyValue is the moved form (grouppb.KeyValue) of a stored entry whose
// key, without the shard's data prefix, is key. It copies both.
func keyValue(key, stored []byte) (*grouppb.KeyValue, error) {
	version, value, err := decodeValue(stored)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", key, err)
	}
	return &grouppb.KeyValue{Key: slices.Clone(key), Value: slices.Clone(value), Version: version}, nil
}

// setKeyValue stores a moved entry in shard. An entry without a version
// comes from a backup taken before keys had versions: its key starts at
// version 1, as if it had just been created.
func (sm *StateMachine) setKeyValue(w pebble.Writer, shard int, kv *grouppb.KeyValue) error {
	return w.Set(sm.dataKey(shard, kv.GetKey()), encodeValue(max(kv.GetVersion(), 1), kv.GetValue()), nil)
}
