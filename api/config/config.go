// Package config is a cluster configuration as clients and servers both
// see it: which replica group serves each shard, where each group's replicas
// are, and ShardOf, which maps a key to its shard. It depends on nothing of
// the servers.
package config

import (
	"hash/fnv"
	"maps"
	"slices"

	"github.com/shardkv/shardkv/api/controllerpb"
)

// MaxShards is the largest shard count a cluster may be created with.
const MaxShards = 4096

// Config is one numbered configuration.
type Config struct {
	Num    uint64
	Shards []uint64            // Shards[i] is the group owning shard i; 0 is none
	Groups map[uint64][]string // group id -> replica addresses, as given
}

// GroupIDs returns the ids of the configuration's groups, ascending.
func (c *Config) GroupIDs() []uint64 {
	return slices.Sorted(maps.Keys(c.Groups))
}

// Clone returns a deep copy.
func (c *Config) Clone() Config {
	out := Config{Num: c.Num, Shards: slices.Clone(c.Shards), Groups: make(map[uint64][]string, len(c.Groups))}
	for g, a := range c.Groups {
		out.Groups[g] = slices.Clone(a)
	}
	return out
}

// ToProto converts c to its wire form, groups sorted by id.
func (c *Config) ToProto() *controllerpb.Config {
	p := &controllerpb.Config{Num: c.Num, Shards: slices.Clone(c.Shards)}
	for _, g := range c.GroupIDs() {
		p.Groups = append(p.Groups, &controllerpb.Group{Id: g, Addrs: slices.Clone(c.Groups[g])})
	}
	return p
}

// FromProto converts the wire form back.
func FromProto(p *controllerpb.Config) Config {
	c := Config{Num: p.GetNum(), Shards: slices.Clone(p.GetShards()), Groups: make(map[uint64][]string)}
	for _, g := range p.GetGroups() {
		c.Groups[g.GetId()] = slices.Clone(g.GetAddrs())
	}
	return c
}

// ShardOf maps a key to its shard: FNV-1a (64-bit) of the key's bytes,
// modulo the cluster's shard count. Clients and servers both route with
// this function; changing it would move every key.
func ShardOf(key []byte, numShards int) int {
	h := fnv.New64a()
	_, _ = h.Write(key)
	return int(h.Sum64() % uint64(numShards))
}
