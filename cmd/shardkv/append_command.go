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
VALUE -, the appended bytes are stdin's, exactly.`,
		Example: `  shardkv append log "line 2"
  date | shardkv append log -`,
		Args: cobra.ExactArgs(2),
		RunE: w.run(func(ctx context.Context, c *client.Client, key, value []byte) error {
			return c.Append(ctx, key, value)
		}),
	}
	w.register(cmd.Flags(), true)
	return setExitCodes(cmd, clientExitCodes)
}
