package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/shardkv/shardkv/backup"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/internal/grouppb"
)

// ErrRestoreNotNew: a restore was asked into a data directory that is not
// new (a restore only creates a cluster).
var ErrRestoreNotNew = errors.New("cluster: a restore needs a new data directory")

// RestoreStats says what Restore loaded.
type RestoreStats struct {
	ConfigNum               uint64 // the restored cluster's configuration the shards were loaded at
	Shards, Keys, Sessions  int
	Bytes                   int64
	Took                    time.Duration
	SourceConfig            uint64 // the backup's configuration
	SourceCluster           string // the backup's cluster id
	SourceStarted, Finished time.Time
}

// checkRestorable refuses a restore into a directory that exists and is
// not empty, and fills in the shard count from the backup.
func checkRestorable(opts *Options) error {
	b := opts.Restore
	if !opts.JoinAll {
		return errors.New("cluster: Options.Restore needs JoinAll")
	}
	if opts.Shards != 0 && opts.Shards != b.Manifest.NumShards {
		return fmt.Errorf("cluster: the backup has %d shards, not %d (a restored cluster keeps the backup's shard count)", b.Manifest.NumShards, opts.Shards)
	}
	opts.Shards = b.Manifest.NumShards
	entries, err := os.ReadDir(opts.Dir)
	if err == nil && len(entries) > 0 {
		return fmt.Errorf("%w: %s is not empty", ErrRestoreNotNew, opts.Dir)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Restore loads every shard of backup b into the group that owns it in
// the cluster's latest configuration, through that group's log (see
// groupserver.RestoreShard): each shard must be served by its group and
// empty, so Restore fills a new cluster and never overwrites. The shards
// are placed by the cluster's own configuration, not the backup's; the
// shard counts must be equal. Every group is waited for until it has
// installed the configuration and serves its shards. A shard whose load
// fails stays Restoring (not served); Restore then fails, and may be run
// again (a shard whose load completed is refused as not empty).
func (c *Cluster) Restore(ctx context.Context, b *backup.Backup) (RestoreStats, error) {
	start := time.Now()
	m := &b.Manifest
	st := RestoreStats{SourceConfig: m.ConfigNum, SourceCluster: m.ClusterID, SourceStarted: m.Started, Finished: m.Finished}
	ctl, err := c.ControllerClient()
	if err != nil {
		return st, err
	}
	defer ctl.Close()
	cfg, numShards, err := ctl.Query(ctx, -1)
	if err != nil {
		return st, fmt.Errorf("read the configuration: %w", err)
	}
	if numShards != m.NumShards || len(cfg.Shards) != m.NumShards {
		return st, fmt.Errorf("cluster: the backup has %d shards, the cluster %d", m.NumShards, numShards)
	}
	st.ConfigNum = cfg.Num
	for _, shard := range b.Shards() {
		gid := cfg.Shards[shard]
		if gid == 0 {
			return st, fmt.Errorf("cluster: no group owns shard %d in configuration %d", shard, cfg.Num)
		}
		srv, err := c.servingLeader(ctx, gid, cfg.Num, shard)
		if err != nil {
			return st, err
		}
		err = srv.RestoreShard(ctx, cfg.Num, shard, func(from uint64, fn func(uint64, *grouppb.ShardChunk) error) error {
			return b.Chunks(shard, from, fn)
		})
		if err != nil {
			return st, fmt.Errorf("restore shard %d into group %d: %w", shard, gid, err)
		}
		e := m.Shards[shard]
		st.Shards, st.Keys, st.Sessions, st.Bytes = st.Shards+1, st.Keys+e.Keys, st.Sessions+e.Sessions, st.Bytes+e.Bytes
	}
	st.Took = time.Since(start)
	c.opts.Logger.Info("restored a backup", "shards", st.Shards, "keys", st.Keys, "config", cfg.Num,
		"backup_cluster", m.ClusterID, "backup_config", m.ConfigNum, "took", st.Took)
	return st, nil
}

// servingLeader waits until group gid's leader has installed configuration
// num and serves shard there (or is restoring it: a load to resume), and
// returns it.
func (c *Cluster) servingLeader(ctx context.Context, gid, num uint64, shard int) (*groupserver.Server, error) {
	why := fmt.Sprintf("group %d has no leader", gid)
	for {
		for _, id := range c.peers(gid) {
			s := c.Group(Replica{Group: gid, ID: id})
			if s == nil || !s.Node().Status().IsLeader {
				continue
			}
			v := s.StateMachine().View()
			switch {
			case v.Config.Num > num:
				return nil, fmt.Errorf("cluster: group %d passed configuration %d during the restore", gid, num)
			case v.Config.Num < num:
				why = fmt.Sprintf("group %d is at configuration %d", gid, v.Config.Num)
			case v.Shards[shard].State == group.Serving || v.Shards[shard].State == group.Restoring:
				return s, nil
			default:
				why = fmt.Sprintf("group %d has shard %d %v", gid, shard, v.Shards[shard].State)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: restore shard %d: %w (%s)", shard, ctx.Err(), why)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
