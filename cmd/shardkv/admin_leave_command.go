package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/controller/ctlclient"
)

func newAdminLeaveCmd(a *adminFlags) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "leave GID...",
		Short: "Remove replica groups and rebalance (their shards move away first)",
		Long: `Remove replica groups from the configuration and rebalance: their shards
move to the remaining groups. Prints the new configuration. shardkv dev
keeps a group that left out when it restarts.`,
		Example: `  shardkv admin leave 4
  shardkv admin leave 4 5 -o json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var gids []uint64
			for _, arg := range args {
				id, err := parseGroupID(arg)
				if err != nil {
					return err
				}
				gids = append(gids, id)
			}
			return a.run(cmd, func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
				cfg, err := ctl.Leave(ctx, gids, force)
				return configView{cfg}, err
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "allow removing every group (orphans their data)")
	return setExitCodes(cmd, clientExitCodes)
}
