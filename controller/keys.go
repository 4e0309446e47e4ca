package controller

import "hash/fnv"

// ShardOf maps a key to its shard: FNV-1a (64-bit) of the key's bytes,
// modulo the cluster's shard count. Clients and servers both route with
// this function; changing it would move every key.
func ShardOf(key []byte, numShards int) int {
	h := fnv.New64a()
	_, _ = h.Write(key)
	return int(h.Sum64() % uint64(numShards))
}
