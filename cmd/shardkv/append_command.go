package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/client"
)

func newAppendCmd() *cobra.Command {
	w := &writeFlags{}
	cmd := &cobra.Command{
		Use:   "append KEY VALUE",
		Short: "Append to a key's value (VALUE - reads from stdin)",
		Long: `Append to a key's value, creating the key if it does not exist. With
VALUE -, the appended bytes are stdin's, exactly. --if-version and
--if-value make it conditional, as for put (exit 6 if the condition does
not hold).`,
		Example: `  shardkv append log "line 2"
  date | shardkv append log -
  shardkv append log "line 3" --if-version 2   # exit 6 if the key's version is not 2`,
		Args: cobra.ExactArgs(2),
		RunE: w.run(func(ctx context.Context, c *client.Client, key, value []byte, opts ...client.WriteOption) (client.WriteResult, error) {
			return c.Append(ctx, key, value, opts...)
		}),
	}
	w.register(cmd.Flags(), true)
	return setExitCodes(cmd, writeExitCodes)
}
