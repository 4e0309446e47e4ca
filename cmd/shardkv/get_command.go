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
		cf     clusterFlags
		maxKey int
		out    *printer
	)
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value of a key (exit 1 if it does not exist)",
		Long: `Print the value of a key, read linearizably.

Output (-o):
  table  the value and a newline (the default)
  raw    the value's exact bytes, nothing added: binary values round-trip
  json   {"key", "value" (both base64), "found", "version" (1 when the key
         was created, +1 per put or append; 0 when not found), "shard",
         "group", "config": the configuration the client routed the read by}`,
		Example: `  shardkv get greeting
  shardkv get photo -o raw > photo.jpg
  shardkv get greeting -o json | jq -r .value | base64 -d
  shardkv get greeting -o json | jq .version   # for put --if-version
  SHARDKV_CONTROLLERS=10.0.0.1:7100 shardkv get greeting`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := out.check(); err != nil {
				return err
			}
			return cf.run(cmd, func(ctx context.Context, addrs []string) error {
				c, err := client.New(ctx, addrs, client.WithLimits(maxKey, kvpb.DefaultMaxValueSize))
				if err != nil {
					return err
				}
				defer c.Close()
				return get(ctx, c, cmd.OutOrStdout(), out, []byte(args[0]))
			})
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().IntVar(&maxKey, "max-key-bytes", kvpb.DefaultMaxKeySize, "the servers' key size limit, checked before sending")
	out = newPrinter(cmd.Flags(), formatTable, formatJSON, formatRaw)
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
