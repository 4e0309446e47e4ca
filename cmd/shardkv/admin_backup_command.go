package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/backup"
	"github.com/shardkv/shardkv/controller/ctlclient"
)

// backupTimeout is admin backup's --timeout unless one is given: a backup
// reads every shard.
const backupTimeout = 10 * time.Minute

func newAdminBackupCmd(a *adminFlags) *cobra.Command {
	return a.command(&cobra.Command{
		Use:   "backup DIR",
		Short: "Write a consistent backup of the whole cluster into a new directory, while it serves",
		Long: `Write a backup of the cluster into DIR (which must not exist, or be empty):
the controller's latest configuration N and shard count, and every shard
of every group as its owner at N holds it, data and duplicate table, one
file per shard, with a SHA-256 checksum per file in manifest.json. The
cluster keeps serving; the backup changes nothing in it.

Consistent means: each group's shards are read at one linearizable point
of that group (a read index confirmed by its leader), while the group is
at configuration N and serves them. So every write acknowledged before the
backup started is in it, and no write sent after it finished is. A write
acknowledged while it ran (or after) may or may not be, shard by shard:
the backup is not one instant across groups. If the configuration changes
while the backup runs (a shard moves), it starts again at the new one; it
never mixes configurations. It waits for shards still moving.

The backup is written beside DIR and renamed to DIR once complete, so DIR
never holds a partial backup. Restore it with 'shardkv dev --restore DIR'.
--timeout is 10m for a backup unless given.`,
		Example: `  shardkv admin backup /var/backups/skv-$(date +%F)
  shardkv admin backup ./bk -o json | jq .config_num`,
		Args: cobra.ExactArgs(1),
	}, clientExitCodes, func(cmd *cobra.Command, args []string) (controllerCall, error) {
		if _, env := os.LookupEnv("SHARDKV_TIMEOUT"); !cmd.Flags().Changed("timeout") && !env {
			a.cf.timeout = backupTimeout
		}
		dir := args[0]
		return func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
			start := time.Now()
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			m, err := backup.Take(ctx, ctl, dir, backup.Options{Logger: log, Dial: a.cf.tlsDial})
			if errors.Is(err, backup.ErrExists) {
				return nil, usagef("%s exists and is not empty: a backup goes into a new directory", dir)
			}
			if err != nil {
				return nil, err
			}
			return backupView{Dir: dir, Manifest: m, took: time.Since(start)}, nil
		}, nil
	})
}

// backupView is admin backup's output: the manifest, and where it is.
type backupView struct {
	Dir string `json:"dir"`
	*backup.Manifest
	took time.Duration
}

func (v backupView) jsonValue() any { return v }

func (v backupView) writeTable(w io.Writer) error {
	m := v.Manifest
	keys, sessions := m.Keys()
	var bytes int64
	groups := map[uint64]bool{}
	for _, s := range m.Shards {
		bytes += s.Bytes
		if s.Group != 0 {
			groups[s.Group] = true
		}
	}
	attempts := ""
	if m.Attempts > 1 {
		attempts = fmt.Sprintf(", %d attempts (the configuration changed)", m.Attempts)
	}
	fmt.Fprintf(w, "backup of cluster %s in %s\n", m.ClusterID, v.Dir)
	fmt.Fprintf(w, "configuration %d: %d shards on %d groups, %d keys (%d bytes), %d sessions, %d files\n",
		m.ConfigNum, m.NumShards, len(groups), keys, bytes, sessions, len(m.Files)+1)
	fmt.Fprintf(w, "holds every write acknowledged before %s, and no write sent after %s\n",
		m.Started.Format(time.RFC3339Nano), m.Finished.Format(time.RFC3339Nano))
	fmt.Fprintf(w, "took %v%s\n", v.took.Round(time.Millisecond), attempts)
	return nil
}
