package controller

import "github.com/shardkv/shardkv/api/config"

// ShardOf maps a key to its shard (see config.ShardOf).
func ShardOf(key []byte, numShards int) int { return config.ShardOf(key, numShards) }
