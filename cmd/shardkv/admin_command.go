package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/controller/ctlclient"
)

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	cf  clusterFlags
	out *printer
}

func newAdminCmd() *cobra.Command {
	a := &adminFlags{}
	admin := &cobra.Command{
		Use:   "admin",
		Short: "Change and inspect the cluster's configuration",
		Example: `  shardkv admin status
  shardkv admin join 4=127.0.0.1:7200,127.0.0.1:7201,127.0.0.1:7202
  shardkv admin leave 4
  shardkv admin move 17 2
  shardkv admin config 3 -o json
  shardkv admin member list 1
  shardkv admin backup ./backup-1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	a.cf.register(admin.PersistentFlags())
	a.out = newPrinter(admin.PersistentFlags(), formatTable, formatJSON)
	admin.AddCommand(newAdminJoinCmd(a), newAdminLeaveCmd(a), newAdminMoveCmd(a), newAdminConfigCmd(a), newAdminStatusCmd(a),
		newAdminMemberCmd(a), newAdminBackupCmd(a))
	return setExitCodes(admin, clientExitCodes)
}

// run calls fn with a controller client and prints the view it returns.
func (a *adminFlags) run(cmd *cobra.Command, fn func(ctx context.Context, ctl *ctlclient.Client) (view, error)) error {
	if err := a.out.check(); err != nil {
		return err
	}
	return a.cf.run(cmd, func(ctx context.Context, addrs []string) error {
		ctl, err := ctlclient.New(addrs)
		if err != nil {
			return err
		}
		defer ctl.Close()
		v, err := fn(ctx, ctl)
		if err != nil {
			return err
		}
		return a.out.print(cmd.OutOrStdout(), v)
	})
}

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
}

func configJSON(cfg config.Config) configOut {
	out := configOut{Num: cfg.Num, Shards: cfg.Shards, Groups: map[string][]string{}}
	for g, a := range cfg.Groups {
		out.Groups[strconv.FormatUint(g, 10)] = a
	}
	return out
}

func (v configView) jsonValue() any { return configJSON(v.cfg) }

func (v configView) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "configuration %d\n", v.cfg.Num)
	tw := newTable(w, "GROUP", "SHARDS", "REPLICAS")
	for _, g := range v.cfg.GroupIDs() {
		fmt.Fprintf(tw, "%d\t%s\t%s\n", g, shardRanges(shardsOf(v.cfg, g)), strings.Join(v.cfg.Groups[g], ","))
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
