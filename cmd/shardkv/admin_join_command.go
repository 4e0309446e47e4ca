package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/controller/ctlclient"
)

func newAdminJoinCmd(a *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "join GID=ADDR,ADDR,ADDR...",
		Short: "Add replica groups and rebalance",
		Long: `Add replica groups to the configuration, each as its id and its replicas'
addresses, and rebalance: shards move to the new groups. Prints the new
configuration.`,
		Example: `  shardkv admin join 4=127.0.0.1:7200,127.0.0.1:7201,127.0.0.1:7202
  shardkv admin join 4=10.0.0.4:7100,10.0.0.5:7100 5=10.0.0.6:7100,10.0.0.7:7100 -o json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			groups := map[uint64][]string{}
			for _, arg := range args {
				idStr, addrs, ok := strings.Cut(arg, "=")
				id, err := parseGroupID(idStr)
				if !ok || err != nil || len(splitList(addrs)) == 0 {
					return usagef("%q is not GID=ADDR,ADDR,... with GID > 0", arg)
				}
				groups[id] = splitList(addrs)
			}
			return a.run(cmd, func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
				cfg, err := ctl.Join(ctx, groups)
				return configView{cfg}, err
			})
		},
	}
	return setExitCodes(cmd, clientExitCodes)
}
