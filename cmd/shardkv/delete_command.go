package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/client"
)

func newDeleteCmd() *cobra.Command {
	w := &writeFlags{}
	cmd := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a key (deleting a missing key succeeds)",
		Long: `Delete a key (deleting a missing key succeeds). --if-version and
--if-value make it conditional, as for put (exit 6 if the condition does
not hold).`,
		Example: `  shardkv delete greeting
  shardkv delete lock --if-value me   # release the lock only if still mine`,
		Args: cobra.ExactArgs(1),
		RunE: w.run(func(ctx context.Context, c *client.Client, key, _ []byte, opts ...client.WriteOption) (client.WriteResult, error) {
			return c.Delete(ctx, key, opts...)
		}),
	}
	w.register(cmd.Flags(), false)
	return setExitCodes(cmd, writeExitCodes)
}
