package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/client"
)

func newDeleteCmd() *cobra.Command {
	w := &writeFlags{}
	cmd := &cobra.Command{
		Use:     "delete KEY",
		Short:   "Delete a key (deleting a missing key succeeds)",
		Example: `  shardkv delete greeting`,
		Args:    cobra.ExactArgs(1),
		RunE: w.run(func(ctx context.Context, c *client.Client, key, _ []byte) error {
			return c.Delete(ctx, key)
		}),
	}
	w.register(cmd.Flags(), false)
	return setExitCodes(cmd, clientExitCodes)
}
