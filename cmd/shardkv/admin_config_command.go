package main

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/controller/ctlclient"
)

func newAdminConfigCmd(a *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config [N]",
		Short: "Show configuration N (the latest by default)",
		Long: `Show a configuration: which group serves which shards, and each group's
replicas. Configuration N that does not exist (yet) is an error (exit 1)
naming the latest.`,
		Example: `  shardkv admin config
  shardkv admin config 3 -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := int64(-1)
			if len(args) == 1 {
				v, err := strconv.ParseInt(args[0], 10, 64)
				if err != nil || v < 0 {
					return usagef("%q is not a configuration number", args[0])
				}
				n = v
			}
			return a.run(cmd, func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
				cfg, _, err := ctl.Query(ctx, n)
				if err != nil {
					return nil, err
				}
				// The controller answers with the latest for a number
				// beyond it.
				if n >= 0 && cfg.Num != uint64(n) {
					return nil, notFound("configuration %d does not exist; the latest is %d", n, cfg.Num)
				}
				return configView{cfg}, nil
			})
		},
	}
	return setExitCodes(cmd, configExitCodes)
}
