package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/controller/ctlclient"
)

// The commands that change the configuration (join, leave, move) and show
// it (config): each prints the configuration that results, a configView.

// parseGroupID reads a group id argument.
func parseGroupID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usagef("%q is not a group id (a number above 0)", s)
	}
	return id, nil
}

// configView prints a configuration: which group serves which shards.
type configView struct{ cfg config.Config }

// configOut is a configuration as JSON.
type configOut struct {
	Num    uint64              `json:"num"`
	Shards []uint64            `json:"shards"`
	Groups map[string][]string `json:"groups"`
	// Incarnations are the groups' recorded incarnations, 16 hex digits
	// (groups recorded without one are left out).
	Incarnations map[string]string `json:"incarnations,omitempty"`
}

func configJSON(cfg config.Config) configOut {
	out := configOut{Num: cfg.Num, Shards: cfg.Shards, Groups: map[string][]string{}}
	for g, a := range cfg.Groups {
		out.Groups[strconv.FormatUint(g, 10)] = a
		if inc := cfg.Incarnation(g); inc != 0 {
			if out.Incarnations == nil {
				out.Incarnations = map[string]string{}
			}
			out.Incarnations[strconv.FormatUint(g, 10)] = formatIncarnation(inc)
		}
	}
	return out
}

// formatIncarnation is a group's incarnation as logs and tools show it:
// 16 hex digits, "-" for none.
func formatIncarnation(inc uint64) string {
	if inc == 0 {
		return "-"
	}
	return fmt.Sprintf("%016x", inc)
}

func (v configView) jsonValue() any { return configJSON(v.cfg) }

func (v configView) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "configuration %d\n", v.cfg.Num)
	tw := newTable(w, "GROUP", "SHARDS", "REPLICAS", "INCARNATION")
	for _, g := range v.cfg.GroupIDs() {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", g, shardRanges(shardsOf(v.cfg, g)), strings.Join(v.cfg.Groups[g], ","), formatIncarnation(v.cfg.Incarnation(g)))
	}
	if s := shardsOf(v.cfg, 0); len(s) > 0 {
		fmt.Fprintf(tw, "none\t%s\t\n", shardRanges(s))
	}
	return tw.Flush()
}

// shardsOf lists the shards cfg assigns to group gid.
func shardsOf(cfg config.Config, gid uint64) []int {
	var out []int
	for s, g := range cfg.Shards {
		if g == gid {
			out = append(out, s)
		}
	}
	return out
}

func newAdminJoinCmd(a *adminFlags) *cobra.Command {
	var create bool
	cmd := a.command(&cobra.Command{
		Use:   "join GID=ADDR,ADDR,ADDR...",
		Short: "Add replica groups and rebalance",
		Long: `Add replica groups to the configuration, each as its id and its replicas'
addresses, and rebalance: shards move to the new groups. Prints the new
configuration.

The replicas must be running. With --create, the addresses are nodes
('shardkv server' processes) and the group is new: each node is first asked
to host its replica (the i-th address replica i), with no restart; the
command refuses, changing nothing, a group the configuration has, and the
nodes a second replica of a group on one node. A group naming one address
twice is refused in any case.`,
		Example: `  shardkv admin join 4=127.0.0.1:7200,127.0.0.1:7201,127.0.0.1:7202
  shardkv admin join 4=10.0.0.4:7100,10.0.0.5:7100 5=10.0.0.6:7100,10.0.0.7:7100 -o json
  shardkv admin join --create 4=10.0.0.1:7111,10.0.0.2:7111,10.0.0.3:7111   # a new group on running nodes`,
		Args: cobra.MinimumNArgs(1),
	}, clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
		groups := map[uint64][]string{}
		for _, arg := range args {
			idStr, addrs, ok := strings.Cut(arg, "=")
			id, err := parseGroupID(idStr)
			if !ok || err != nil || len(splitList(addrs)) == 0 {
				return nil, usagef("%q is not GID=ADDR,ADDR,... with GID > 0", arg)
			}
			groups[id] = splitList(addrs)
			if len(slices.Compact(slices.Sorted(slices.Values(groups[id])))) != len(groups[id]) {
				return nil, usagef("%q: an address is named twice; a node hosts one replica of a group (two would fail together)", arg)
			}
		}
		return func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
			if create {
				if err := a.createGroups(ctx, ctl, groups); err != nil {
					return nil, err
				}
			}
			cfg, err := ctl.Join(ctx, groups)
			return configView{cfg}, err
		}, nil
	})
	cmd.Flags().BoolVar(&create, "create", false, "create the groups on running nodes first (replica i at the i-th address)")
	return cmd
}

func newAdminLeaveCmd(a *adminFlags) *cobra.Command {
	var force bool
	cmd := a.command(&cobra.Command{
		Use:   "leave GID...",
		Short: "Remove replica groups and rebalance (their shards move away first)",
		Long: `Remove replica groups from the configuration and rebalance: their shards
move to the remaining groups. Prints the new configuration. shardkv dev
keeps a group that left out when it restarts. A group that left keeps
running on its replicas until each node drops it ('admin member unhost GID
ADDR', once its shards are handed over): join it again with them, or give
its id to a new group (the old copy, another incarnation of the id, then
takes none of its shards).`,
		Example: `  shardkv admin leave 4
  shardkv admin leave 4 5 -o json`,
		Args: cobra.MinimumNArgs(1),
	}, clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
		var gids []uint64
		for _, arg := range args {
			id, err := parseGroupID(arg)
			if err != nil {
				return nil, err
			}
			gids = append(gids, id)
		}
		return func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
			cfg, err := ctl.Leave(ctx, gids, force)
			return configView{cfg}, err
		}, nil
	})
	cmd.Flags().BoolVar(&force, "force", false, "allow removing every group (orphans their data)")
	return cmd
}

func newAdminMoveCmd(a *adminFlags) *cobra.Command {
	return a.command(&cobra.Command{
		Use:   "move SHARD GID",
		Short: "Assign one shard to one group, without rebalancing",
		Example: `  shardkv admin move 17 2
  shardkv admin move 17 2 -o json | jq .shards[17]`,
		Args: cobra.ExactArgs(2),
	}, clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
		shard, err := strconv.Atoi(args[0])
		if err != nil || shard < 0 {
			return nil, usagef("%q is not a shard number", args[0])
		}
		gid, err := parseGroupID(args[1])
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
			cfg, err := ctl.Move(ctx, shard, gid)
			return configView{cfg}, err
		}, nil
	})
}

func newAdminConfigCmd(a *adminFlags) *cobra.Command {
	return a.command(&cobra.Command{
		Use:   "config [N]",
		Short: "Show configuration N (the latest by default)",
		Long: `Show a configuration: which group serves which shards, and each group's
replicas. Configuration N that does not exist (yet) is an error (exit 1)
naming the latest.`,
		Example: `  shardkv admin config
  shardkv admin config 3 -o json`,
		Args: cobra.MaximumNArgs(1),
	}, configExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
		n := int64(-1)
		if len(args) == 1 {
			v, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || v < 0 {
				return nil, usagef("%q is not a configuration number", args[0])
			}
			n = v
		}
		return func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
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
		}, nil
	})
}
