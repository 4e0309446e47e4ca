// Package backup writes and reads shardkv backups: the controller's
// configuration and every shard of every group at one configuration
// number, each shard's data and duplicate table, with a manifest and a
// SHA-256 checksum per file.
//
// # Consistency
//
// Take reads the controller's latest configuration N (linearizably), then
// asks each group that owns shards at N for all of them at once
// (the groups' Backup.ReadShards RPC). The replica asked confirms a read index
// with its leader, waits until it has applied it, and then, under the lock
// its state machine applies entries with, checks that the group is at N
// and serves every shard asked for, and takes one Pebble snapshot. So each
// group's shards are exact as of one linearizable point of that group,
// between the request and the reply, at which that group owned and served
// them at N: nobody else could serve them then. Every write acknowledged
// before Take started is in the backup: it was applied by the shard's
// owner at its configuration, and the shard's data (the handoff carries
// it whole) is in the group that owns the shard at N when it is read,
// after the write was acknowledged. A write sent after Take returned is
// not in it (each read point is before its reply). A write acknowledged
// while Take ran, or after, may or may not be, per shard: the backup is not
// one instant across groups, and two groups' points may be apart by the
// time it takes to read the first.
//
// A group below N, or with a shard of N still arriving, is waited for. A
// group past N (the configuration changed during the backup) means a
// shard may have moved after an earlier group was read: the attempt is
// thrown away and Take starts again at the new latest configuration,
// until its context ends. A backup never mixes configurations.
//
// # Layout
//
//	manifest.json        Manifest: written last
//	controller.json      the configuration N and the shard count
//	shard-NNNN.pb        one per shard owned at N: varint-length-delimited
//	                     grouppb.ShardChunk records, the last one (last set)
//	                     with the shard's duplicate table
//
// A backup is written into a hidden directory beside DIR and renamed to
// DIR once complete and synced, so DIR never holds a partial backup.
package backup

import (
	"errors"
	"fmt"
	"time"
)

// Format names the layout a backup is written in.
const Format = "shardkv-backup/1"

// The fixed file names of a backup.
const (
	// ManifestFile holds the Manifest, as JSON; it is written last.
	ManifestFile = "manifest.json"
	// ControllerFile holds the Controller record, as JSON: the
	// configuration the backup is at and the shard count.
	ControllerFile = "controller.json"
)

// Manifest describes a backup: what it holds and how to check it.
type Manifest struct {
	Format string `json:"format"`
	// ClusterID is the backed-up cluster's id, in hex as its servers state
	// it.
	ClusterID string `json:"cluster_id"`
	// ConfigNum is the configuration every shard was read at.
	ConfigNum uint64 `json:"config_num"`
	NumShards int    `json:"num_shards"`
	// Shards has one entry per shard, in order.
	Shards []Shard `json:"shards"`
	// Files lists every file but the manifest, with its size and SHA-256.
	Files []File `json:"files"`
	// Started is when Take started: every write acknowledged before it is
	// in the backup. Finished is when the last shard was read: no write
	// sent after it is (one acknowledged after it may be: it was applied
	// before). Created is when the manifest was written.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Created  time.Time `json:"created"`
	// Attempts is how many configurations Take tried: more than one when
	// the configuration changed during the backup.
	Attempts int `json:"attempts"`
}

// Shard is one shard of a backup.
type Shard struct {
	Shard int `json:"shard"`
	// Group owned the shard at ConfigNum (0: no group did; the shard is
	// empty and has no file).
	Group uint64 `json:"group"`
	File  string `json:"file,omitempty"`
	// Keys, Sessions and Bytes (of keys and values) count what the file
	// holds.
	Keys     int   `json:"keys"`
	Sessions int   `json:"sessions"`
	Bytes    int64 `json:"bytes"`
	// AppliedIndex is the group's applied index the shard was read at, on
	// Replica.
	AppliedIndex uint64 `json:"applied_index"`
	Replica      uint64 `json:"replica"`
}

// File is one file of a backup.
type File struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Controller is the content of controller.json: the configuration the
// backup was taken at.
type Controller struct {
	ConfigNum uint64              `json:"config_num"`
	NumShards int                 `json:"num_shards"`
	Shards    []uint64            `json:"shards"` // shard -> group
	Groups    map[string][]string `json:"groups"` // group -> replica addresses at ConfigNum
}

// Keys returns the number of keys and of session records in the backup,
// summed over its shards.
func (m *Manifest) Keys() (keys, sessions int) {
	for _, s := range m.Shards {
		keys += s.Keys
		sessions += s.Sessions
	}
	return keys, sessions
}

// ErrDamaged: a backup's files are missing, of the wrong size or checksum,
// or do not decode. Match with errors.Is; the error is a *DamagedError.
var ErrDamaged = errors.New("backup: damaged")

// DamagedError says which file of a backup is damaged and how.
type DamagedError struct {
	Dir, File string
	Reason    string
}

// Error names the backup's directory, the damaged file (if one is to
// blame) and the reason.
func (e *DamagedError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("the backup in %s is damaged: %s", e.Dir, e.Reason)
	}
	return fmt.Sprintf("the backup in %s is damaged: %s: %s", e.Dir, e.File, e.Reason)
}

// Is makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// Errors of Take.
var (
	// ErrExists: the backup's directory exists and is not empty.
	ErrExists = errors.New("backup: the directory exists and is not empty")
	// ErrNoConfiguration: the cluster has no configuration (no group ever
	// joined), so there is nothing to back up.
	ErrNoConfiguration = errors.New("backup: the cluster has no configuration yet")
)
