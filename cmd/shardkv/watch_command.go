package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/client"
)

// watchLong is the watch command's long help.
const watchLong = `Print every change (put, append, delete) to a key, or with --prefix to
every key that starts with PREFIX (an empty one: every key), from now on,
with the value and version after it: each key's changes once and in
version order, across leader changes and shard moves. Changes to different
keys come in no particular order.

With --from-version N a key's watch starts at the change that made its
version N instead of now (resume from the last version seen, plus one):
its changes from N on, in order, then every change as it happens. Versions
restart at 1 after a delete: N is of the key's life when the watch starts;
if the key is not at N yet, the changes before N are skipped, unless a
delete ends that life first (it and every change after it are printed).
If the servers no longer hold the change that made N, a gap is told (see
below) and the watch goes on from now.

Changes the servers no longer hold when the watch resumes (it fell far
behind, or a replica restarted) are not hidden: a line on stderr names the
shard whose keys missed changes, and the watch goes on (read the keys
again to resync).

Output (-o):
  table  one line per change: PUT|APPEND|DELETE, the key, the version
         after it, the value after it
  json   one object per change: {"type", "key", "value" (both base64),
         "version"}`

func newWatchCmd() *cobra.Command {
	var (
		cf          clusterFlags
		prefix      bool
		fromVersion uint64
		count       int
		out         *printer
	)
	cmd := &cobra.Command{
		Use:   "watch KEY [--from-version N] | watch --prefix PREFIX",
		Short: "Print every change to a key, or to the keys under a prefix, as it happens",
		Long:  watchLong,
		Example: `  shardkv watch greeting
  shardkv watch --prefix config/
  shardkv watch --prefix config/ --count 1 -o json   # wait for one change
  shardkv watch greeting --from-version 3   # versions 3, 4, ... then live
  shardkv watch greeting --timeout 30s`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("watch takes one KEY (or, with --prefix, one PREFIX)")
			}
			if prefix && fromVersion > 0 {
				return usagef("--from-version starts a KEY's watch, not a --prefix one")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			err := cf.run(cmd, func(ctx context.Context, addrs []string) error {
				c, err := client.New(ctx, addrs)
				if err != nil {
					return err
				}
				defer c.Close()
				var opts []client.WatchOption
				if prefix {
					opts = append(opts, client.WatchPrefix())
				}
				if fromVersion > 0 {
					opts = append(opts, client.FromVersion(fromVersion))
				}
				return watchKeys(c.Watch(ctx, []byte(args[0]), opts...), cmd.OutOrStdout(), cmd.ErrOrStderr(), out, count)
			})
			var te *timeoutError
			if errors.As(err, &te) {
				return nil // watching until --timeout is done, not failed
			}
			return err
		},
	}
	cf.registerTimeout(cmd.Flags(), 100*365*24*time.Hour, "stop watching after this long (default: until interrupted)")
	cmd.Flags().BoolVar(&prefix, "prefix", false, "watch every key that starts with the argument")
	cmd.Flags().Uint64Var(&fromVersion, "from-version", 0, "start at the change that made this version of the KEY (0: from now)")
	cmd.Flags().IntVar(&count, "count", 0, "exit after this many changes (0: never)")
	out = newPrinter(cmd.Flags(), formatTable, formatJSON)
	return cmd
}

// watchKeys prints the watch's changes until count of them (0: until the
// watch ends), and its gaps on stderr.
func watchKeys(ch client.WatchChan, w, stderr io.Writer, out *printer, count int) error {
	n := 0
	for resp := range ch {
		if resp.Gap != nil {
			fmt.Fprintf(stderr, "shardkv watch: %v\n", resp.Gap)
		}
		if resp.Canceled {
			return resp.Err()
		}
		for _, ev := range resp.Events {
			if err := out.print(w, eventView{Type: ev.Type.String(), Key: ev.Key, Value: ev.Value, Version: ev.Version}); err != nil {
				return err
			}
			if n++; count > 0 && n == count {
				return nil
			}
		}
	}
	return nil
}

// eventView is one change as watch prints it.
type eventView struct {
	Type    string `json:"type"`
	Key     []byte `json:"key"`
	Value   []byte `json:"value"`
	Version uint64 `json:"version"`
}

func (v eventView) writeTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, "%s %q %d %q\n", v.Type, v.Key, v.Version, v.Value)
	return err
}

func (v eventView) jsonValue() any { return v }
