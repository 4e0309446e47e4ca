package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/rpc"
)

func newAdminStatusCmd(a *adminFlags) *cobra.Command {
	return a.command(&cobra.Command{
		Use:   "status",
		Short: "Show every group: replicas, leaders, terms, applied indexes, shard states and migrations",
		Long: `Show the latest configuration as the groups see it: every replica's role,
term, applied index and configuration, the shards each leader serves, and
the migrations in progress. "settled" means every group's leader has the
latest configuration and no shard is moving.`,
		Example: `  shardkv admin status
  shardkv admin status -o json | jq '.groups[].migrations'
  shardkv admin status -o json | jq -e .settled   # exit 0 once settled`,
		Args: cobra.NoArgs,
	}, clientExitCodes, func(*cobra.Command, []string) (controllerCall, error) {
		return func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
			cfg, _, err := ctl.Query(ctx, -1)
			if err != nil {
				return nil, err
			}
			pool := rpc.NewPool(a.cf.dial()...)
			defer pool.Close()
			return collectStatus(ctx, pool, cfg), nil
		}, nil
	})
}

// notInConfig is a replicaOut's Error for a member the group's leader
// lists that the configuration does not (a learner catching up, say).
const notInConfig = "not in the configuration"

type replicaOut struct {
	ID        uint64 `json:"id"`
	Addr      string `json:"addr"`
	Leader    bool   `json:"leader"`
	Term      uint64 `json:"term"`
	Applied   uint64 `json:"applied"`
	ConfigNum uint64 `json:"config"`
	// Incarnation is the group's incarnation as the replica applied it
	// (16 hex digits; "-" for none yet): a replica stating another one
	// than the configuration records is another copy of the group id.
	Incarnation string `json:"incarnation,omitempty"`
	// Member is the replica's raft role as the group's leader has it
	// (voter, learner, outgoing), and Match how much of the leader's log
	// it has acknowledged.
	Member string `json:"member,omitempty"`
	Match  uint64 `json:"match,omitempty"`
	Error  string `json:"error,omitempty"`
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

// statusView is admin status's output.
type statusView struct {
	Config configOut  `json:"config"`
	Groups []groupOut `json:"groups"`
	// Settled is true when every group's leader has the latest
	// configuration and no migration is in progress.
	Settled bool `json:"settled"`
}

func (st statusView) jsonValue() any { return st }

func collectStatus(ctx context.Context, pool *rpc.Pool, cfg config.Config) statusView {
	out := statusView{Config: configJSON(cfg), Settled: true}
	for _, gid := range cfg.GroupIDs() {
		g, lead := collectGroup(ctx, pool, gid, cfg.Groups[gid])
		if lead == nil || lead.GetConfigNum() != cfg.Num || len(g.Migrations) > 0 {
			out.Settled = false
		}
		out.Groups = append(out.Groups, g)
	}
	return out
}

// collectGroup asks every replica of a group for its status; lead is the
// leader's reply, if one answered.
func collectGroup(ctx context.Context, pool *rpc.Pool, gid uint64, addrs []string) (g groupOut, lead *kvpb.StatusReply) {
	g = groupOut{ID: gid, Shards: []shardOut{}, Migrations: []shardOut{}}
	for _, addr := range addrs {
		r := replicaOut{Addr: addr}
		reply, err := replicaStatus(ctx, pool, gid, addr)
		if err != nil {
			r.Error = describe(err)
		} else {
			r.ID, r.Term, r.Applied, r.ConfigNum = reply.GetReplica(), reply.GetTerm(), reply.GetApplied(), reply.GetConfigNum()
			r.Incarnation = formatIncarnation(reply.GetIncarnation())
			r.Leader = reply.GetLeader() == reply.GetReplica()
			if r.Leader {
				lead = reply
			}
		}
		g.Replicas = append(g.Replicas, r)
	}
	addMembership(ctx, pool, gid, addrs, &g)
	slices.SortStableFunc(g.Replicas, func(a, b replicaOut) int { return cmp.Compare(a.ID, b.ID) })
	if lead != nil {
		for _, s := range lead.GetShards() {
			so := shardOut{Shard: s.GetShard(), State: shardStateName(s.GetState()), Peer: s.GetPeerGroup()}
			g.Shards = append(g.Shards, so)
			if so.State != "serving" {
				g.Migrations = append(g.Migrations, so)
			}
		}
	}
	return g, lead
}

// addMembership marks each replica of g with its raft role and progress,
// as the group's leader has them, and adds the members the configuration
// does not list (learners catching up, for instance).
func addMembership(ctx context.Context, pool *rpc.Pool, gid uint64, addrs []string, g *groupOut) {
	reply, err := (&members{group: gid, addrs: addrs, pool: pool}).list(ctx)
	if err != nil || !reply.GetFromLeader() {
		return
	}
	for _, m := range reply.GetMembers() {
		role := m.GetRole().Name()
		i := slices.IndexFunc(g.Replicas, func(r replicaOut) bool { return r.ID == m.GetId() })
		if i < 0 {
			// An unreachable replica did not say its id: the leader's
			// member at its address is it (one row, not two).
			i = slices.IndexFunc(g.Replicas, func(r replicaOut) bool { return r.ID == 0 && r.unreachable() && r.Addr == m.GetAddr() })
			if i >= 0 {
				g.Replicas[i].ID = m.GetId()
			}
		}
		if i < 0 {
			g.Replicas = append(g.Replicas, replicaOut{ID: m.GetId(), Addr: m.GetAddr(), Error: notInConfig})
			i = len(g.Replicas) - 1
		}
		g.Replicas[i].Member, g.Replicas[i].Match = role, m.GetMatch()
	}
}

// replicaStatus asks the process at addr for the status of its replica of
// group gid.
func replicaStatus(ctx context.Context, pool *rpc.Pool, gid uint64, addr string) (*kvpb.StatusReply, error) {
	conn, err := pool.Get(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{Group: gid})
}

// shardStateName is a shard state as people read it: "serving".
func shardStateName(s kvpb.ShardState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "SHARD_STATE_"))
}

// unreachable reports whether r is a replica of the configuration that did
// not answer.
func (r replicaOut) unreachable() bool { return r.Error != "" && r.Error != notInConfig }

func (st statusView) writeTable(w io.Writer) error {
	fmt.Fprintf(w, "configuration %d", st.Config.Num)
	state := "migrating"
	if st.Settled {
		state = "settled"
	}
	unreachable := 0
	for _, g := range st.Groups {
		for _, r := range g.Replicas {
			if r.unreachable() {
				unreachable++
			}
		}
	}
	if unreachable > 0 {
		state += fmt.Sprintf("; %d replicas unreachable", unreachable)
	}
	fmt.Fprintf(w, " (%s)\n", state)
	tw := newTable(w, "GROUP", "REPLICA", "ADDRESS", "ROLE", "MEMBER", "MATCH", "TERM", "APPLIED", "CONFIG", "SHARDS")
	for _, g := range st.Groups {
		for _, r := range g.Replicas {
			role := "follower"
			switch {
			case r.Error == notInConfig:
				role = "-"
			case r.unreachable():
				role = "unreachable"
			case r.Leader:
				role = "leader"
			}
			member, match := r.Member, strconv.FormatUint(r.Match, 10)
			if member == "" {
				member, match = "-", "-"
			}
			var shards []int
			if r.Leader {
				for _, s := range g.Shards {
					shards = append(shards, int(s.Shard))
				}
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", g.ID, r.ID, r.Addr, role, member, match, r.Term, r.Applied, r.ConfigNum, shardRanges(shards))
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
