package main

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/controller/ctlclient"
)

func newAdminMoveCmd(a *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "move SHARD GID",
		Short: "Assign one shard to one group, without rebalancing",
		Example: `  shardkv admin move 17 2
  shardkv admin move 17 2 -o json | jq .shards[17]`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			shard, err := strconv.Atoi(args[0])
			if err != nil || shard < 0 {
				return usagef("%q is not a shard number", args[0])
			}
			gid, err := parseGroupID(args[1])
			if err != nil {
				return err
			}
			return a.run(cmd, func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
				cfg, err := ctl.Move(ctx, shard, gid)
				return configView{cfg}, err
			})
		},
	}
	return setExitCodes(cmd, clientExitCodes)
}
