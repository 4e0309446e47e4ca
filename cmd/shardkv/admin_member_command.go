package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/memberclient"
	"github.com/shardkv/shardkv/internal/rpc"
)

func newAdminMemberCmd(a *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "member",
		Short: "List and change the replicas of a group or of the controller",
		Long: `List and change the members (replicas) of one Raft group: a replica group
by its id, or the controller as 0 (or "controller").

Replacing a dead machine, as etcd's member add/promote/remove:
  1. shardkv admin member add GROUP ID ADDR      (a new id, a new address)
     A node already running at ADDR (a 'shardkv server', even one hosting
     nothing yet) hosts the new replica at once, empty; otherwise start it
     with the command printed (--initial-cluster-state existing, empty
     data), or start an empty node there and run 'admin member host'.
     It catches up from the leader, by snapshot when far behind.
  2. shardkv admin member replace GROUP OLD ID   (promote ID and remove OLD
     at once, joint consensus), or promote then remove
  3. shardkv admin member unhost GROUP OLDADDR   (if the old node still
     runs: it drops the removed replica and its data)
Each change is refused, changing nothing, while another is in progress,
when a learner has not caught up, or when the voters left could not form a
reachable quorum. A group's leader tells the controller its new replicas;
for the controller, update --controllers wherever it is given.`,
		Example: `  shardkv admin member list 1
  shardkv admin member add 1 4 10.0.0.14:7113
  shardkv admin member replace 1 3 4
  shardkv admin member remove controller 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	change := func(use, short, example string, nargs int, kind memberpb.ChangeKind) *cobra.Command {
		return newMemberChangeCmd(a, use, short, example, nargs, kind)
	}
	cmd.AddCommand(newMemberListCmd(a), newMemberHostCmd(a), newMemberUnhostCmd(a),
		change("add GROUP ID ADDR", "Add replica ID at ADDR to a group as a learner (it votes once promoted)",
			"  shardkv admin member add 1 4 10.0.0.14:7113", 3, memberpb.ChangeKind_CHANGE_KIND_ADD_LEARNER),
		change("promote GROUP ID", "Make learner ID a voter once it has caught up",
			"  shardkv admin member promote 1 4", 2, memberpb.ChangeKind_CHANGE_KIND_PROMOTE),
		change("remove GROUP ID", "Remove replica ID from a group",
			"  shardkv admin member remove 1 3", 2, memberpb.ChangeKind_CHANGE_KIND_REMOVE),
		change("replace GROUP OLD NEW", "Promote learner NEW and remove voter OLD in one joint-consensus change",
			"  shardkv admin member replace 1 3 4", 3, memberpb.ChangeKind_CHANGE_KIND_REPLACE))
	return setExitCodes(cmd, clientExitCodes)
}

// newMemberChangeCmd is one of the membership change commands.
func newMemberChangeCmd(a *adminFlags, use, short, example string, nargs int, kind memberpb.ChangeKind) *cobra.Command {
	c := &cobra.Command{
		Use: use, Short: short, Example: example, Args: cobra.ExactArgs(nargs),
		RunE: func(cmd *cobra.Command, args []string) error {
			gid, err := parseMemberGroup(args[0])
			if err != nil {
				return err
			}
			req := &memberpb.ChangeRequest{Group: gid, Kind: kind}
			if req.Id, err = parseMemberID(args[1]); err != nil {
				return err
			}
			switch kind {
			case memberpb.ChangeKind_CHANGE_KIND_ADD_LEARNER:
				// Checked before anything changes: a typo would add a
				// learner nobody can reach.
				if err := checkHostPort("ADDR", args[2]); err != nil {
					return err
				}
				req.Addr = args[2]
			case memberpb.ChangeKind_CHANGE_KIND_REPLACE:
				req.Old = req.Id
				if req.Id, err = parseMemberID(args[2]); err != nil {
					return err
				}
			}
			return a.runMembers(cmd, gid, func(ctx context.Context, m *members) (view, error) {
				reply, err := m.change(ctx, req)
				if err != nil {
					return nil, err
				}
				v := membersView{group: gid, reply: reply}
				if kind == memberpb.ChangeKind_CHANGE_KIND_ADD_LEARNER {
					if err := v.host(ctx, m, req.GetId(), req.GetAddr()); err != nil {
						return nil, err
					}
				}
				return v, nil
			})
		},
	}
	return setExitCodes(c, clientExitCodes)
}

// newMemberListCmd is `admin member list`.
func newMemberListCmd(a *adminFlags) *cobra.Command {
	list := &cobra.Command{
		Use:   "list GROUP",
		Short: "List a group's members: voters, learners, and each one's progress",
		Example: `  shardkv admin member list 1
  shardkv admin member list controller -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			gid, err := parseMemberGroup(args[0])
			if err != nil {
				return err
			}
			return a.runMembers(cmd, gid, func(ctx context.Context, m *members) (view, error) {
				reply, err := m.list(ctx)
				return membersView{group: gid, reply: reply}, err
			})
		},
	}
	return setExitCodes(list, clientExitCodes)
}

// newMemberHostCmd is `admin member host`: the node at a learner's address
// hosts it (what `member add` does when a node runs there already).
func newMemberHostCmd(a *adminFlags) *cobra.Command {
	host := &cobra.Command{
		Use:   "host GROUP ID",
		Short: "Make the node at learner ID's address host it, without a restart",
		Long: `Ask the node (a running 'shardkv server') at the address of learner ID of a
group to host it: the node records the replica in its data directory and
starts it, empty, and it catches up from the leader. 'member add' does this
by itself when a node already runs at the address; this is for a node
started after the add, or to learn whether a node hosts it (hosting a
replica already hosted changes nothing).`,
		Example: `  shardkv server --listen 10.0.0.14:7113 --data /var/lib/shardkv/n4 --controllers $C   # an empty node
  shardkv admin member host 1 4`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			gid, err := parseGroupID(args[0])
			if err != nil {
				return err
			}
			id, err := parseMemberID(args[1])
			if err != nil {
				return err
			}
			return a.runMembers(cmd, gid, func(ctx context.Context, m *members) (view, error) {
				reply, err := m.list(ctx)
				if err != nil {
					return nil, err
				}
				i := slices.IndexFunc(reply.GetMembers(), func(mb *memberpb.Member) bool { return mb.GetId() == id })
				if i < 0 {
					return nil, fmt.Errorf("%w: %d (add it to group %d first: shardkv admin member add %d %d ADDR)",
						rpcerr.ErrUnknownMember, id, gid, gid, id)
				}
				addr := reply.GetMembers()[i].GetAddr()
				hosted, err := memberclient.Host(ctx, m.pool, addr, &memberpb.HostRequest{Group: gid, Id: id, Members: groupMembers(reply, id, addr)}, hostTimeout)
				if err != nil {
					return nil, fmt.Errorf("the node at %s: %w", addr, err)
				}
				return membersView{group: gid, reply: reply, hostedBy: addr, hosted: hosted}, nil
			})
		},
	}
	return setExitCodes(host, clientExitCodes)
}

// createGroups asks every node of each new group to host its replica
// (memberpb.Node's Host with Create): replica i at the i-th address. A
// group the latest configuration has is refused before any node is asked;
// then every node is asked to check (Host with Check), so that an address
// a node does not answer to, a node down or a group some node hosts is
// refused with nothing recorded anywhere; only then is each asked to host.
// A failure in that last pass leaves the replicas recorded so far: the same
// command, retried, completes the group; another list for the group would
// leave its recorded replicas a second copy of it, which takes none of its
// shards (it has another incarnation) but runs until unhosted, and the
// error says so.
func (a *adminFlags) createGroups(ctx context.Context, ctl *ctlclient.Client, groups map[uint64][]string) error {
	cfg, _, err := ctl.Query(ctx, -1)
	if err != nil {
		return err
	}
	for _, gid := range slices.Sorted(maps.Keys(groups)) {
		if addrs, ok := cfg.Groups[gid]; ok {
			return fmt.Errorf("%w: configuration %d has group %d at %s; nothing changed",
				memberpb.ErrGroupExists, cfg.Num, gid, strings.Join(addrs, ","))
		}
	}
	pool := rpc.NewPool(a.cf.dial()...)
	defer pool.Close()
	requests := func(gid uint64, check bool) []*memberpb.HostRequest {
		members := map[uint64]string{}
		for i, addr := range groups[gid] {
			members[uint64(i+1)] = addr
		}
		var reqs []*memberpb.HostRequest
		for i := range groups[gid] {
			reqs = append(reqs, &memberpb.HostRequest{Group: gid, Id: uint64(i + 1), Members: members, Create: true, Check: check})
		}
		return reqs
	}
	for _, gid := range slices.Sorted(maps.Keys(groups)) {
		for _, req := range requests(gid, true) {
			addr := req.GetMembers()[req.GetId()]
			if _, err := memberclient.Host(ctx, pool, addr, req, hostTimeout); err != nil {
				return fmt.Errorf("create group %d: the node at %s (replica %d): %w; nothing recorded, nothing joined", gid, addr, req.GetId(), err)
			}
		}
	}
	for _, gid := range slices.Sorted(maps.Keys(groups)) {
		var done []string
		for _, req := range requests(gid, false) {
			addr := req.GetMembers()[req.GetId()]
			if _, err := memberclient.Host(ctx, pool, addr, req, hostTimeout); err != nil {
				return fmt.Errorf("create group %d: the node at %s (replica %d): %w; nothing joined; recorded so far: group %d's replicas on %v. "+
					"Run this same command again once fixed: another list for group %d leaves those replicas a second copy of it, which serves nothing but runs",
					gid, addr, req.GetId(), err, gid, done, gid)
			}
			done = append(done, addr)
		}
	}
	return nil
}

// hostTimeout bounds a node's Host: it asks the group's leader first, for
// up to ten seconds while the group elects one.
const hostTimeout = 30 * time.Second

// parseMemberGroup reads a group argument: a group id, or 0 or
// "controller" for the controller.
func parseMemberGroup(s string) (uint64, error) {
	if s == "controller" || s == "0" {
		return 0, nil
	}
	return parseGroupID(s)
}

func parseMemberID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usagef("%q is not a replica id (a number above 0)", s)
	}
	return id, nil
}

// members calls a group's Membership service on its replicas.
type members struct {
	group       uint64
	addrs       []string // the group's replicas (the controller's for group 0)
	controllers []string
	pool        *rpc.Pool
}

// runMembers finds group gid's replicas (from the controller's latest
// configuration, or --controllers for the controller) and calls fn.
func (a *adminFlags) runMembers(cmd *cobra.Command, gid uint64, fn func(ctx context.Context, m *members) (view, error)) error {
	return a.run(cmd, func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
		controllers, err := a.cf.addrs()
		if err != nil {
			return nil, err
		}
		m := &members{group: gid, controllers: controllers, pool: rpc.NewPool(a.cf.dial()...)}
		defer m.pool.Close()
		m.addrs = m.controllers
		if gid != 0 {
			cfg, _, err := ctl.Query(ctx, -1)
			if err != nil {
				return nil, err
			}
			addrs, ok := cfg.Groups[gid]
			if !ok {
				return nil, fmt.Errorf("%w: %d", controllerpb.ErrUnknownGroup, gid)
			}
			m.addrs = addrs
		}
		return fn(ctx, m)
	})
}

// list returns the group's membership as its leader answers it (with each
// member's progress), or any replica's when no leader is reachable.
func (m *members) list(ctx context.Context) (*memberpb.ListReply, error) {
	return memberclient.List(ctx, m.pool, m.group, m.addrs, 2*time.Second)
}

// change sends req to the group's leader (memberclient.Change), for a few
// rounds while nobody leads or answers; a refusal, or an attempt that may
// have been applied, ends it (the caller lists to learn the outcome).
func (m *members) change(ctx context.Context, req *memberpb.ChangeRequest) (*memberpb.ListReply, error) {
	b := rpc.NewBackoff(100*time.Millisecond, time.Second)
	var last error
	for round := 0; round < 5; round++ {
		reply, err := memberclient.Change(ctx, m.pool, req, m.addrs, 30*time.Second, nil)
		if err == nil || errors.Is(err, memberclient.ErrOutcomeUnknown) || !rpcerr.Retryable(err) && !rpcerr.CertainlyNotApplied(err) {
			return reply, err
		}
		last = err
		if rpc.Wait(ctx, b) != nil {
			break
		}
	}
	return nil, last
}

// membersView prints a group's members.
type membersView struct {
	group    uint64
	reply    *memberpb.ListReply
	added    uint64              // the member added, if any
	next     string              // for an added member no node hosted: how to start it
	hostErr  error               // why the node at its address did not host it
	hostedBy string              // the node that hosts the added member
	hosted   *memberpb.HostReply // what that node hosts now
}

// host asks the node at addr to host the learner id just added
// (memberpb.Node's Host). Where nothing, or no node, listens yet, v says
// how to start it (etcd's add, then start); any other failure is the
// command's, saying that the learner was added.
func (v *membersView) host(ctx context.Context, m *members, id uint64, addr string) error {
	v.added = id
	if v.group == 0 {
		v.next = startCommand(v.group, id, addr, v.reply, m.controllers)
		return nil
	}
	hosted, err := memberclient.Host(ctx, m.pool, addr, &memberpb.HostRequest{Group: v.group, Id: id, Members: groupMembers(v.reply, id, addr)}, hostTimeout)
	switch {
	case err == nil:
		v.hostedBy, v.hosted = addr, hosted
		return nil
	case rpc.Refused(err) || errors.Is(err, memberclient.ErrNotANode):
		v.hostErr, v.next = err, startCommand(v.group, id, addr, v.reply, m.controllers)
		return nil
	}
	// The change is made whatever the node said: exit 4 (failed), never
	// 3 (outcome unknown), even when the node could not be reached.
	failed := func(err error) error { return &exitError{code: exitFailed, err: err} }
	if errors.Is(err, memberpb.ErrHostsOtherReplica) {
		// Most likely a replica removed from the group (a wrong remove
		// being undone, or a node reused): it stays on its node until
		// dropped.
		return failed(fmt.Errorf("learner %d was added to group %d, but the node at %s did not host it: %w "+
			"(if that replica was removed from the group, drop it first: shardkv admin member unhost %d %s; then: shardkv admin member host %d %d; "+
			"or undo with: shardkv admin member remove %d %d)",
			id, v.group, addr, err, v.group, addr, v.group, id, v.group, id))
	}
	if rpcerr.Retryable(err) || errors.Is(err, context.DeadlineExceeded) {
		// The node may be starting it still: asking again is safe.
		return failed(fmt.Errorf("learner %d was added to group %d; whether the node at %s hosts it is unknown: %w "+
			"(ask again, which is safe: shardkv admin member host %d %d)", id, v.group, addr, err, v.group, id))
	}
	return failed(fmt.Errorf("learner %d was added to group %d, but the node at %s did not host it: %w "+
		"(retry with: shardkv admin member host %d %d; or undo with: shardkv admin member remove %d %d)",
		id, v.group, addr, err, v.group, id, v.group, id))
}

type memberOut struct {
	ID     uint64 `json:"id"`
	Addr   string `json:"addr"`
	Role   string `json:"role"`
	Match  uint64 `json:"match,omitempty"`
	Active bool   `json:"active,omitempty"`
}

func (v membersView) out() []memberOut {
	var out []memberOut
	for _, m := range v.reply.GetMembers() {
		out = append(out, memberOut{ID: m.GetId(), Addr: m.GetAddr(),
			Role: m.GetRole().Name(), Match: m.GetMatch(), Active: m.GetActive()})
	}
	return out
}

func (v membersView) jsonValue() any {
	hostErr := ""
	if v.hostErr != nil {
		hostErr = describe(v.hostErr)
	}
	return map[string]any{"group": v.group, "leader": v.reply.GetLeader(), "joint": v.reply.GetJoint(),
		"progress": v.reply.GetFromLeader(), "members": v.out(), "start": v.next, "hosted_by": v.hostedBy, "host_error": hostErr}
}

func (v membersView) writeTable(w io.Writer) error {
	name := fmt.Sprintf("group %d", v.group)
	if v.group == 0 {
		name = "controller"
	}
	fmt.Fprintf(w, "%s: leader %d", name, v.reply.GetLeader())
	if v.reply.GetJoint() {
		fmt.Fprint(w, " (joint consensus: a change of two voters in progress)")
	}
	fmt.Fprintln(w)
	tw := newTable(w, "ID", "ADDRESS", "ROLE", "MATCH", "ACTIVE")
	for _, m := range v.out() {
		match, active := "-", "-"
		if v.reply.GetFromLeader() {
			match, active = strconv.FormatUint(m.Match, 10), strconv.FormatBool(m.Active)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", m.ID, m.Addr, m.Role, match, active)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if v.hostedBy != "" {
		fmt.Fprintf(w, "the node at %s hosts it now (it hosts %s)\n", v.hostedBy, formatHosted(v.hosted))
	}
	if v.hostErr != nil {
		fmt.Fprintf(w, "no node runs at its address yet: %s\n", describe(v.hostErr))
	}
	if v.next != "" {
		fmt.Fprintf(w, "start the new replica on empty data with:\n  %s\n", v.next)
		if v.group != 0 {
			fmt.Fprintf(w, "or start an empty node at its address and run:\n  shardkv admin member host %d %d\n", v.group, v.added)
		}
	}
	return nil
}

// newMemberUnhostCmd is `admin member unhost`: the node at ADDR stops and
// deletes its replica of a group that no longer needs it.
func newMemberUnhostCmd(a *adminFlags) *cobra.Command {
	unhost := &cobra.Command{
		Use:   "unhost GROUP ADDR",
		Short: "Make the node at ADDR stop and delete its replica of a group that no longer needs it",
		Long: `Ask the node (a running 'shardkv server') at ADDR to stop its replica of a
group and delete it from its data directory (its next start does not host
it). Only a replica no longer needed: one removed from its group ('member
remove' or 'member replace'), or one of a group the configuration does not
have (it left, or was created and never joined) or has as another copy of
its id, once its shards are handed over. Anything else is refused
(STILL_MEMBER), changing nothing. A node hosting nothing of the group
answers with what it hosts.`,
		Example: `  shardkv admin member remove 1 3
  shardkv admin member unhost 1 10.0.0.13:7113`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			gid, err := parseGroupID(args[0])
			if err != nil {
				return err
			}
			addr := args[1]
			if err := checkHostPort("ADDR", addr); err != nil {
				return err
			}
			return a.run(cmd, func(ctx context.Context, _ *ctlclient.Client) (view, error) {
				pool := rpc.NewPool(a.cf.dial()...)
				defer pool.Close()
				hosted, err := memberclient.Unhost(ctx, pool, addr, gid, hostTimeout)
				if err != nil {
					return nil, fmt.Errorf("the node at %s: %w", addr, err)
				}
				return unhostView{group: gid, addr: addr, hosted: hosted}, nil
			})
		},
	}
	return setExitCodes(unhost, clientExitCodes)
}

// unhostView is a node's replicas after it dropped its replica of group.
type unhostView struct {
	group  uint64
	addr   string
	hosted *memberpb.HostReply
}

func (v unhostView) writeTable(w io.Writer) error {
	var err error
	if d := v.hosted.GetDropped(); d != nil {
		_, err = fmt.Fprintf(w, "the node at %s dropped replica %d of group %d and deleted its data (it hosts %s)\n",
			v.addr, d.GetId(), d.GetGroup(), orNone(formatHosted(v.hosted)))
	} else {
		_, err = fmt.Fprintf(w, "the node at %s hosts no replica of group %d: nothing dropped (it hosts %s)\n",
			v.addr, v.group, orNone(formatHosted(v.hosted)))
	}
	return err
}

func (v unhostView) jsonValue() any {
	hosted := []map[string]uint64{}
	for _, h := range v.hosted.GetHosted() {
		hosted = append(hosted, map[string]uint64{"group": h.GetGroup(), "id": h.GetId()})
	}
	out := map[string]any{"node": v.addr, "group": v.group, "hosted": hosted, "dropped": nil}
	if d := v.hosted.GetDropped(); d != nil {
		out["dropped"] = map[string]uint64{"group": d.GetGroup(), "id": d.GetId()}
	}
	return out
}

// orNone is s, or "nothing" when s is empty.
func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}

// formatHosted is a node's replicas as "GROUP/ID, ...".
func formatHosted(r *memberpb.HostReply) string {
	var list []string
	for _, h := range r.GetHosted() {
		list = append(list, fmt.Sprintf("%d/%d", h.GetGroup(), h.GetId()))
	}
	return strings.Join(list, ", ")
}

// groupMembers is the group's membership the reply says, member id at
// addr included, as raft id -> address: the outgoing voters of a joint
// change are left out.
func groupMembers(reply *memberpb.ListReply, id uint64, addr string) map[uint64]string {
	peers := map[uint64]string{}
	for _, m := range reply.GetMembers() {
		if m.GetRole() != memberpb.Role_ROLE_OUTGOING {
			peers[m.GetId()] = m.GetAddr()
		}
	}
	peers[id] = addr
	return peers
}

// startCommand is the command line that starts member id at addr, added
// to group gid, as the reply's membership says.
func startCommand(gid, id uint64, addr string, reply *memberpb.ListReply, controllers []string) string {
	peers := groupMembers(reply, id, addr)
	var list []string
	for _, pid := range slices.Sorted(maps.Keys(peers)) {
		list = append(list, fmt.Sprintf("%d=%s", pid, peers[pid]))
	}
	what := fmt.Sprintf("server --group %d --controllers %s", gid, strings.Join(controllers, ","))
	if gid == 0 {
		what = "controller"
	}
	return fmt.Sprintf("shardkv %s --id %d --listen %s --peers %s --initial-cluster-state existing --data DIR",
		what, id, addr, strings.Join(list, ","))
}
