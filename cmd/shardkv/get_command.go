package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/client"
)

func newGetCmd() *cobra.Command {
	var (
		lf     listFlags
		prefix string
	)
	cmd := &cobra.Command{
		Use:   "get KEY | get --prefix PREFIX",
		Short: "Print the value of a key (exit 1 if it does not exist), or the keys and values under a prefix",
		Long: `Print the value of a key, read linearizably.

With --prefix, print every key that starts with PREFIX, in byte order, with
its version and value (as "list PREFIX... --values" would): at most
--limit keys (0, the default: all), after --after. An empty listing is no
error (exit 0). See list for what a listing guarantees and its output.

Output (-o):
  table  the value and a newline (the default); with --prefix, a table of
         KEY, VERSION and VALUE
  raw    the value's exact bytes, nothing added: binary values round-trip
         (not with --prefix)
  json   {"key", "value" (both base64), "found", "version" (1 when the key
         was created, +1 per put or append; 0 when not found), "shard",
         "group", "config": the configuration the client routed the read by};
         with --prefix, list's JSON ("kvs", "count", "more", "next")`,
		Example: `  shardkv get greeting
  shardkv get photo -o raw > photo.jpg
  shardkv get greeting -o json | jq -r .value | base64 -d
  shardkv get greeting -o json | jq .version   # for put --if-version
  shardkv get --prefix user/                   # every key under user/, with its value
  shardkv get --prefix user/ --limit 50 -o json | jq -r .next   # base64 cursor for --after
  SHARDKV_CONTROLLERS=10.0.0.1:7100 shardkv get greeting`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if f.Changed("prefix") {
				if len(args) > 0 {
					return usagef("get takes KEY or --prefix, not both")
				}
				if lf.out.format == formatRaw {
					return usagef("-o raw prints one value: not with --prefix")
				}
				lf.values = true
				return lf.run(cmd, client.WithPrefix([]byte(prefix)))
			}
			if len(args) != 1 {
				return usagef("get takes KEY, or --prefix PREFIX")
			}
			if f.Changed("limit") || f.Changed("after") {
				return usagef("--limit and --after go with --prefix")
			}
			if err := lf.out.check(); err != nil {
				return err
			}
			return lf.cf.run(cmd, func(ctx context.Context, addrs []string) error {
				c, err := client.New(ctx, addrs, client.WithLimits(lf.maxKey, kvpb.DefaultMaxValueSize))
				if err != nil {
					return err
				}
				defer c.Close()
				return get(ctx, c, cmd.OutOrStdout(), lf.out, []byte(args[0]))
			})
		},
	}
	lf.register(cmd.Flags(), 0, formatTable, formatJSON, formatRaw)
	cmd.Flags().StringVar(&prefix, "prefix", "", "list the keys that start with this (and their values) instead of getting KEY")
	return setExitCodes(cmd, getExitCodes)
}

func get(ctx context.Context, c *client.Client, w io.Writer, out *printer, key []byte) error {
	got, err := c.Get(ctx, key)
	value, found := got.Value, got.Found
	if err != nil {
		return err
	}
	cfg := c.Config()
	v := getView{Key: key, Found: found, Version: got.Version, Config: cfg.Num}
	if len(cfg.Shards) > 0 {
		v.Shard = config.ShardOf(key, len(cfg.Shards))
		v.Group = cfg.Shards[v.Shard]
	}
	if found {
		v.Value = value
		if value == nil {
			v.Value = []byte{}
		}
	}
	// A missing key prints nothing but its JSON (found: false).
	if found || out.format == formatJSON {
		if err := out.print(w, v); err != nil {
			return err
		}
	}
	if !found {
		return notFound("key %q not found", key)
	}
	return nil
}

// getView is get's output.
type getView struct {
	Key     []byte `json:"key"`
	Value   []byte `json:"value"` // null when not found
	Found   bool   `json:"found"`
	Version uint64 `json:"version"` // 0 when not found
	Shard   int    `json:"shard"`
	Group   uint64 `json:"group"`
	Config  uint64 `json:"config"`
}

func (v getView) writeTable(w io.Writer) error {
	_, err := w.Write(append(v.Value, '\n'))
	return err
}

func (v getView) writeRaw(w io.Writer) error {
	_, err := w.Write(v.Value)
	return err
}

func (v getView) jsonValue() any { return v }
