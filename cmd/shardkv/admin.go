package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/transport"
)

func newAdminCmd() *cobra.Command {
	var (
		cf     clientFlags
		output string
		force  bool
	)
	admin := &cobra.Command{
		Use:   "admin",
		Short: "Change and inspect the cluster's configuration",
		Example: `  shardkv admin status
  shardkv admin join 4=127.0.0.1:7200,127.0.0.1:7201,127.0.0.1:7202
  shardkv admin leave 4
  shardkv admin move 17 2
  shardkv admin config 3 -o json`,
	}
	run := func(fn func(ctx context.Context, ctl *ctlclient.Client, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
			defer cancel()
			ctl, err := ctlclient.New(splitList(cf.controllers))
			if err != nil {
				return err
			}
			defer ctl.Close()
			return fn(ctx, ctl, cmd, args)
		}
	}
	printConfig := func(w io.Writer, cfg controller.Config) error {
		if output == "json" {
			return writeJSON(w, configJSON(cfg))
		}
		fmt.Fprintf(w, "configuration %d\n", cfg.Num)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "GROUP\tSHARDS\tREPLICAS")
		for _, g := range cfg.GroupIDs() {
			fmt.Fprintf(tw, "%d\t%s\t%s\n", g, shardList(cfg, g), strings.Join(cfg.Groups[g], ","))
		}
		if s := shardList(cfg, 0); s != "" {
			fmt.Fprintf(tw, "none\t%s\t\n", s)
		}
		return tw.Flush()
	}
	join := &cobra.Command{
		Use:     "join GID=ADDR,ADDR,ADDR...",
		Short:   "Add replica groups and rebalance",
		Example: `  shardkv admin join 4=127.0.0.1:7200,127.0.0.1:7201,127.0.0.1:7202`,
		Args:    cobra.MinimumNArgs(1),
		RunE: run(func(ctx context.Context, ctl *ctlclient.Client, cmd *cobra.Command, args []string) error {
			groups := map[uint64][]string{}
			for _, a := range args {
				idStr, addrs, ok := strings.Cut(a, "=")
				id, err := strconv.ParseUint(idStr, 10, 64)
				if !ok || err != nil || id == 0 || addrs == "" {
					return fmt.Errorf("%q is not GID=ADDR,ADDR with GID > 0", a)
				}
				groups[id] = splitList(addrs)
			}
			cfg, err := ctl.Join(ctx, groups)
			if err != nil {
				return err
			}
			return printConfig(cmd.OutOrStdout(), cfg)
		}),
	}
	leave := &cobra.Command{
		Use:     "leave GID...",
		Short:   "Remove replica groups and rebalance (their shards move away first)",
		Example: `  shardkv admin leave 4`,
		Args:    cobra.MinimumNArgs(1),
		RunE: run(func(ctx context.Context, ctl *ctlclient.Client, cmd *cobra.Command, args []string) error {
			var gids []uint64
			for _, a := range args {
				id, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return fmt.Errorf("%q is not a group id", a)
				}
				gids = append(gids, id)
			}
			cfg, err := ctl.Leave(ctx, gids, force)
			if err != nil {
				return err
			}
			return printConfig(cmd.OutOrStdout(), cfg)
		}),
	}
	leave.Flags().BoolVar(&force, "force", false, "allow removing every group (orphans their data)")
	move := &cobra.Command{
		Use:     "move SHARD GID",
		Short:   "Assign one shard to one group, without rebalancing",
		Example: `  shardkv admin move 17 2`,
		Args:    cobra.ExactArgs(2),
		RunE: run(func(ctx context.Context, ctl *ctlclient.Client, cmd *cobra.Command, args []string) error {
			shard, err := strconv.Atoi(args[0])
			if err != nil {
				return fmt.Errorf("%q is not a shard number", args[0])
			}
			gid, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil {
				return fmt.Errorf("%q is not a group id", args[1])
			}
			cfg, err := ctl.Move(ctx, shard, gid)
			if err != nil {
				return err
			}
			return printConfig(cmd.OutOrStdout(), cfg)
		}),
	}
	config := &cobra.Command{
		Use:   "config [N]",
		Short: "Show configuration N (the latest by default)",
		Example: `  shardkv admin config
  shardkv admin config 3 -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: run(func(ctx context.Context, ctl *ctlclient.Client, cmd *cobra.Command, args []string) error {
			n := int64(-1)
			if len(args) == 1 {
				v, err := strconv.ParseInt(args[0], 10, 64)
				if err != nil || v < 0 {
					return fmt.Errorf("%q is not a configuration number", args[0])
				}
				n = v
			}
			cfg, _, err := ctl.Query(ctx, n)
			if err != nil {
				return err
			}
			return printConfig(cmd.OutOrStdout(), cfg)
		}),
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show every group: replicas, leaders, terms, applied indexes, shard states and migrations",
		Example: `  shardkv admin status
  shardkv admin status -o json | jq '.groups[].migrations'`,
		Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context, ctl *ctlclient.Client, cmd *cobra.Command, _ []string) error {
			cfg, _, err := ctl.Query(ctx, -1)
			if err != nil {
				return err
			}
			st := collectStatus(ctx, cfg)
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			return printStatus(cmd.OutOrStdout(), st)
		}),
	}
	for _, c := range []*cobra.Command{join, leave, move, config, status} {
		cf.register(c)
		c.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
		admin.AddCommand(c)
	}
	return admin
}

func shardList(cfg controller.Config, gid uint64) string {
	var parts []string
	for s, g := range cfg.Shards {
		if g == gid {
			parts = append(parts, strconv.Itoa(s))
		}
	}
	return strings.Join(parts, ",")
}

type configOut struct {
	Num    uint64              `json:"num"`
	Shards []uint64            `json:"shards"`
	Groups map[string][]string `json:"groups"`
}

func configJSON(cfg controller.Config) configOut {
	out := configOut{Num: cfg.Num, Shards: cfg.Shards, Groups: map[string][]string{}}
	for g, a := range cfg.Groups {
		out.Groups[strconv.FormatUint(g, 10)] = a
	}
	return out
}

type replicaOut struct {
	ID        uint64 `json:"id"`
	Addr      string `json:"addr"`
	Leader    bool   `json:"leader"`
	Term      uint64 `json:"term"`
	Applied   uint64 `json:"applied"`
	ConfigNum uint64 `json:"config"`
	Error     string `json:"error,omitempty"`
}

type shardOut struct {
	Shard uint32 `json:"shard"`
	State string `json:"state"`
	Peer  uint64 `json:"peer_group,omitempty"`
}

type groupOut struct {
	ID         uint64       `json:"id"`
	Replicas   []replicaOut `json:"replicas"`
	Shards     []shardOut   `json:"shards"`
	Migrations []shardOut   `json:"migrations"`
}

type statusOut struct {
	Config configOut  `json:"config"`
	Groups []groupOut `json:"groups"`
	// Settled is true when every group's leader has the latest
	// configuration and no migration is in progress.
	Settled bool `json:"settled"`
}

func collectStatus(ctx context.Context, cfg controller.Config) statusOut {
	out := statusOut{Config: configJSON(cfg), Settled: true}
	for _, gid := range cfg.GroupIDs() {
		g := groupOut{ID: gid, Shards: []shardOut{}, Migrations: []shardOut{}}
		var lead *kvpb.StatusReply
		for _, addr := range cfg.Groups[gid] {
			r := replicaOut{Addr: addr}
			reply, err := replicaStatus(ctx, addr)
			if err != nil {
				r.Error = err.Error()
			} else {
				r.ID, r.Term, r.Applied, r.ConfigNum = reply.GetReplica(), reply.GetTerm(), reply.GetApplied(), reply.GetConfigNum()
				r.Leader = reply.GetLeader() == reply.GetReplica()
				if r.Leader {
					lead = reply
				}
			}
			g.Replicas = append(g.Replicas, r)
		}
		if lead == nil || lead.GetConfigNum() != cfg.Num {
			out.Settled = false
		}
		if lead != nil {
			for _, s := range lead.GetShards() {
				so := shardOut{Shard: s.GetShard(), State: s.GetState(), Peer: s.GetPeerGroup()}
				g.Shards = append(g.Shards, so)
				if so.State != "serving" {
					g.Migrations = append(g.Migrations, so)
					out.Settled = false
				}
			}
		}
		out.Groups = append(out.Groups, g)
	}
	return out
}

func replicaStatus(ctx context.Context, addr string) (*kvpb.StatusReply, error) {
	conn, err := grpc.NewClient(addr, transport.DialOptions()...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{})
}

func printStatus(w io.Writer, st statusOut) error {
	fmt.Fprintf(w, "configuration %d", st.Config.Num)
	if st.Settled {
		fmt.Fprintln(w, " (settled)")
	} else {
		fmt.Fprintln(w, " (migrating)")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tREPLICA\tADDRESS\tROLE\tTERM\tAPPLIED\tCONFIG\tSHARDS")
	for _, g := range st.Groups {
		for _, r := range g.Replicas {
			role := "follower"
			switch {
			case r.Error != "":
				role = "unreachable"
			case r.Leader:
				role = "leader"
			}
			var shards []string
			if r.Leader {
				for _, s := range g.Shards {
					shards = append(shards, strconv.Itoa(int(s.Shard)))
				}
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", g.ID, r.ID, r.Addr, role, r.Term, r.Applied, r.ConfigNum, strings.Join(shards, ","))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, g := range st.Groups {
		slices.SortFunc(g.Migrations, func(a, b shardOut) int { return int(a.Shard) - int(b.Shard) })
		for _, m := range g.Migrations {
			dir := "from"
			if m.State == "offering" || m.State == "held" {
				dir = "to"
			}
			fmt.Fprintf(w, "migration: group %d shard %d %s (%s group %d)\n", g.ID, m.Shard, m.State, dir, m.Peer)
		}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
