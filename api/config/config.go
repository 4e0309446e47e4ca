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
	// Num is the configuration's number: 0 for the initial one, which has
	// no groups, and one more for each change that alters the shards or
	// the groups.
	Num    uint64
	Shards []uint64            // Shards[i] is the group owning shard i; 0 is none
	Groups map[uint64][]string // group id -> replica addresses, as given
	// Incarnations maps a group id to the incarnation the controller
	// recorded when it joined (controllerpb.Group.incarnation); a group
	// missing here (or 0) was recorded without one. Only ids of Groups.
	Incarnations map[uint64]uint64
}

// Incarnation is the incarnation recorded for group gid, 0 for none.
func (c *Config) Incarnation(gid uint64) uint64 { return c.Incarnations[gid] }

// Foreign reports whether c records for group gid another incarnation
// than incarnation: c is then not the configuration of the copy of gid
// whose incarnation that is, and that copy must take it as if gid were
// not in it. A configuration without an incarnation for gid is every
// copy's.
func (c *Config) Foreign(gid, incarnation uint64) bool {
	rec := c.Incarnations[gid]
	return rec != 0 && rec != incarnation
}

// Without returns a copy of c without group gid: its shards show no
// owner.
func (c *Config) Without(gid uint64) Config {
	out := c.Clone()
	delete(out.Groups, gid)
	delete(out.Incarnations, gid)
	for s, g := range out.Shards {
		if g == gid {
			out.Shards[s] = 0
		}
	}
	return out
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
	if len(c.Incarnations) > 0 {
		out.Incarnations = maps.Clone(c.Incarnations)
	}
	return out
}

// ToProto converts c to its wire form, groups sorted by id.
func (c *Config) ToProto() *controllerpb.Config {
	p := &controllerpb.Config{Num: c.Num, Shards: slices.Clone(c.Shards)}
	for _, g := range c.GroupIDs() {
		p.Groups = append(p.Groups, &controllerpb.Group{Id: g, Addrs: slices.Clone(c.Groups[g]), Incarnation: c.Incarnations[g]})
	}
	return p
}

// FromProto converts the wire form back.
func FromProto(p *controllerpb.Config) Config {
	c := Config{Num: p.GetNum(), Shards: slices.Clone(p.GetShards()), Groups: make(map[uint64][]string)}
	for _, g := range p.GetGroups() {
		c.Groups[g.GetId()] = slices.Clone(g.GetAddrs())
		if inc := g.GetIncarnation(); inc != 0 {
			if c.Incarnations == nil {
				c.Incarnations = map[uint64]uint64{}
			}
			c.Incarnations[g.GetId()] = inc
		}
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
