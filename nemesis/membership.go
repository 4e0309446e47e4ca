package nemesis

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/internal/faultproxy"
	"github.com/shardkv/shardkv/internal/memberclient"
)

// Membership changes
//
// A replica whose machine died for good is replaced as the README says:
// the nemesis, as the operator, adds a new replica (a new id, a new
// address) as a learner through the group's Membership service, starts it
// on empty data with --initial-cluster-state existing, and replaces the
// dead one by it. The process table follows: a lost replica leaves the
// group's replicas in service at once and is never restarted; the new one
// joins them when its process starts.
//
// The links of an added replica n:
//
//	peers to n, and clients     n's inbound proxy: the address the change names,
//	                            which every member dials (and the controller
//	                            lists once the group's leader tells it)
//	n to peer m                 first a proxy n->m (Link(n, m); n's --peers),
//	                            then whatever addresses the leader's raft
//	                            snapshot carries (see the replace scenario)
//
// so Isolate(n) and Degrade(n) cut or degrade everything sent to n; a
// founding member's links are as before.

// memberAttempt bounds one Membership call (a change answers once applied).
const memberAttempt = 4 * time.Second

// ListMembers returns group g's membership as its leader answers it (with
// each member's progress), asking the replicas in service directly.
func (c *Cluster) ListMembers(ctx context.Context, g uint64) (*memberpb.ListReply, error) {
	reply, err := memberclient.List(ctx, c.pool, g, c.serviceAddrs(g), time.Second)
	if err == nil && !reply.GetFromLeader() {
		return nil, fmt.Errorf("group %d: no replica answers as the leader", g)
	}
	return reply, err
}

// listAt asks the replica at addr for group g's membership as it applied it.
func (c *Cluster) listAt(ctx context.Context, addr string, g uint64, timeout time.Duration) (*memberpb.ListReply, error) {
	return memberclient.At(ctx, c.pool, addr, g, timeout)
}

// ChangeMembers makes one attempt of req at group g's leader
// (memberclient.Change over the replicas in service, reached directly).
func (c *Cluster) ChangeMembers(ctx context.Context, req *memberpb.ChangeRequest) (*memberpb.ListReply, error) {
	g := req.GetGroup()
	return memberclient.Change(ctx, c.pool, req, c.serviceAddrs(g), memberAttempt,
		func(id uint64) string { return c.listenAddr(Replica{Group: g, ID: id}) })
}

// serviceAddrs are the direct addresses of group g's replicas in service.
func (c *Cluster) serviceAddrs(g uint64) []string {
	var addrs []string
	for _, id := range c.ids(g) {
		addrs = append(addrs, c.listenAddr(Replica{Group: g, ID: id}))
	}
	return addrs
}

// Lose kills r with SIGKILL and deletes its data for good: it leaves the
// replicas in service and is never restarted (replace it; RetireReplica
// once it is no longer a member). Not with Options.Nodes (ErrNodes), but
// for a controller replica.
func (c *Cluster) Lose(r Replica) error {
	if c.opts.Nodes && r.Group != 0 {
		return ErrNodes
	}
	_, err := c.lose(r)
	return err
}

// lose kills r's process with SIGKILL, takes every replica it hosts out
// of service for good and deletes its data; it returns those replicas, by
// group.
func (c *Cluster) lose(r Replica) (map[uint64]Replica, error) {
	c.Kill(r)
	c.mu.Lock()
	p := c.procs[r]
	p.lost = true
	lost := map[uint64]Replica{}
	for _, h := range p.hosts {
		lost[h.Group] = h
		c.members[h.Group] = slices.DeleteFunc(c.members[h.Group], func(id uint64) bool { return id == h.ID })
	}
	c.mu.Unlock()
	return lost, os.RemoveAll(p.data)
}

// RetireReplica forgets a lost replica that is no longer a member of its
// group: its proxies close.
func (c *Cluster) RetireReplica(r Replica) {
	c.mu.Lock()
	p := c.procs[r]
	if p == nil || !p.lost {
		c.mu.Unlock()
		return
	}
	delete(c.procs, r)
	var closing []*faultproxy.Proxy
	for k, l := range c.links {
		if k[0] == r || k[1] == r {
			closing = append(closing, l)
			delete(c.links, k)
		}
	}
	c.mu.Unlock()
	for _, l := range append(closing, p.inbound) {
		l.Close()
	}
}

// NewReplica makes room for a new replica of group g (the next unused id)
// on a new address behind a new inbound proxy, whose address it returns:
// the address to add it with. StartAdded starts it once it was added. Not
// with Options.Nodes (ErrNodes), but for the controller.
func (c *Cluster) NewReplica(g uint64) (Replica, string, error) {
	if c.opts.Nodes && g != 0 {
		return Replica{}, "", ErrNodes
	}
	listen, err := cluster.FreeAddr()
	if err != nil {
		return Replica{}, "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.nextReplica(g)
	c.seed++
	in, err := faultproxy.Listen("127.0.0.1:0", listen, c.seed)
	if err != nil {
		return Replica{}, "", err
	}
	p := c.newProc(r)
	p.listen, p.inbound = listen, in
	c.procs[r] = p
	return r, in.Addr(), nil
}

// nextReplica is group g's next unused replica id (c.mu held): no replica
// in service, lost or reserved has it.
func (c *Cluster) nextReplica(g uint64) Replica {
	r := Replica{Group: g}
	for q := range c.procs {
		if q.Group == g {
			r.ID = max(r.ID, q.ID)
		}
	}
	for _, id := range c.members[g] {
		r.ID = max(r.ID, id)
	}
	for q := range c.reserved {
		if q.Group == g {
			r.ID = max(r.ID, q.ID)
		}
	}
	r.ID++
	return r
}

// LoseNode kills the node hosting r with SIGKILL and deletes its data for
// good (Options.Nodes): every replica it hosts, one of each group, leaves
// the replicas in service and is never restarted (replace each by a
// replica on a new node, HostAdded; RetireReplica once it is no longer a
// member). It returns them, by group.
func (c *Cluster) LoseNode(r Replica) (map[uint64]Replica, error) {
	if !c.opts.Nodes || r.Group == 0 {
		return nil, fmt.Errorf("nemesis: %s is not on a node", r)
	}
	return c.lose(r)
}

// NewNode starts a node process hosting nothing yet on empty data
// (Options.Nodes), as an operator starts the machine that replaces a dead
// one, and returns its address: the one its replicas are added at
// (`shardkv admin member add G ID ADDR` names the node's own address, and
// the node checks it). Its peers and clients reach it there, not through
// a proxy: a proxy fault on the new node's traffic (Degrade, Isolate)
// cuts nothing, while netfilter faults, kills and pauses act on it as on
// any node.
func (c *Cluster) NewNode() (string, error) {
	listen, err := cluster.FreeAddr()
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	n := nodes + len(c.newNodes) // node4 the first, never a lost node's name
	c.seed++
	seed := c.seed
	c.mu.Unlock()
	in, err := faultproxy.Listen("127.0.0.1:0", listen, seed)
	if err != nil {
		return "", err
	}
	p := &proc{name: fmt.Sprintf("node%d", n+1), uid: nodeUID(n), node: true, direct: true, listen: listen, inbound: in}
	if err := c.setArgs(p, nil); err != nil { // reads c.Addrs: not under c.mu
		in.Close()
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.newNodes = append(c.newNodes, p) // Close stops it
	return listen, c.launch(p)
}

// ReserveOnNode reserves the next replica id of group g for the new node
// at addr (NewNode): the id to add it as a learner with.
func (c *Cluster) ReserveOnNode(g uint64) Replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.nextReplica(g)
	c.reserved[r] = true
	return r
}

// HostAdded asks the new node at addr (NewNode) to host r, added to its
// group as the learner members shows, with the group's members as its
// leader listed them (memberpb.Node.Host, as `shardkv admin member add`
// does), and puts r in service on that node once it does.
func (c *Cluster) HostAdded(ctx context.Context, r Replica, addr string, members *memberpb.ListReply) error {
	c.mu.Lock()
	var p *proc
	for _, q := range c.newNodes {
		if q.listen == addr {
			p = q
		}
	}
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("nemesis: no new node at %s", addr)
	}
	peers := map[uint64]string{r.ID: addr}
	for _, m := range members.GetMembers() {
		if m.GetRole() != memberpb.Role_ROLE_OUTGOING && m.GetId() != r.ID {
			peers[m.GetId()] = m.GetAddr() // a lost replica: where the group knew it
		}
	}
	if _, err := memberclient.Host(ctx, c.pool, addr, &memberpb.HostRequest{Group: r.Group, Id: r.ID, Members: peers}, memberAttempt); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.reserved, r)
	p.hosts = append(p.hosts, r)
	c.procs[r] = p
	c.members[r.Group] = slices.Sorted(slices.Values(append(c.members[r.Group], r.ID)))
	return nil
}

// StartAdded starts r, added to its group as the learner the change's
// reply (members) shows, on empty data with --initial-cluster-state
// existing, and puts it in service. Its --peers are what `shardkv admin
// member add` prints, each replica in service at a new proxy r->m.
func (c *Cluster) StartAdded(r Replica, members *memberpb.ListReply) error {
	c.mu.Lock()
	p := c.procs[r]
	inService := map[uint64]string{}
	for _, id := range c.members[r.Group] {
		inService[id] = c.procs[Replica{Group: r.Group, ID: id}].listen
	}
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s: no such new replica", r)
	}
	peers := map[uint64]string{r.ID: p.inbound.Addr()}
	for _, m := range members.GetMembers() {
		if m.GetRole() == memberpb.Role_ROLE_OUTGOING || m.GetId() == r.ID {
			continue
		}
		peers[m.GetId()] = m.GetAddr() // a lost replica: where the group knew it
		if target, ok := inService[m.GetId()]; ok {
			c.mu.Lock()
			c.seed++
			seed := c.seed
			c.mu.Unlock()
			l, err := faultproxy.Listen("127.0.0.1:0", target, seed)
			if err != nil {
				return err
			}
			c.mu.Lock()
			c.links[[2]Replica{r, {Group: r.Group, ID: m.GetId()}}] = l
			c.mu.Unlock()
			peers[m.GetId()] = l.Addr()
		}
	}
	var list []string
	for _, id := range slices.Sorted(maps.Keys(peers)) {
		list = append(list, fmt.Sprintf("%d=%s", id, peers[id]))
	}
	if err := c.setArgs(p, [][]string{list}, "--initial-cluster-state", "existing"); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.launch(p); err != nil {
		return err
	}
	c.members[r.Group] = slices.Sorted(slices.Values(append(c.members[r.Group], r.ID)))
	return nil
}

// Exited reports whether r's process ended by itself (it was not killed).
func (c *Cluster) Exited(r Replica) bool {
	c.mu.Lock()
	p := c.procs[r]
	c.mu.Unlock()
	if p == nil || p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// LogPath is where r's process logs.
func (c *Cluster) LogPath(r Replica) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logPath(c.procs[r])
}

// UseControllers gives every server the controllers in service as
// --controllers from its next start on (the README: after a controller
// replacement, update --controllers wherever it is given). Running
// processes keep the list they started with.
func (c *Cluster) UseControllers() {
	list := strings.Join(c.Addrs(0), ",")
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if i := slices.Index(p.args, "--controllers"); i >= 0 && i+1 < len(p.args) {
			p.args[i+1] = list
		}
	}
}

// Describe names an address of the cluster: a replica's listen address, an
// inbound proxy, or a link proxy.
func (c *Cluster) Describe(addr string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		switch addr {
		case p.listen:
			return p.String() + " directly"
		case p.inbound.Addr():
			return p.String() + "'s inbound proxy"
		}
	}
	for k, l := range c.links {
		if l.Addr() == addr {
			return fmt.Sprintf("proxy %s->%s", k[0], k[1])
		}
	}
	return addr
}

// CheckMembership checks that every group's voters, as its leader has
// them, are exactly its replicas in service, with no learner and no change
// in progress: the process table and the groups agree.
func (c *Cluster) CheckMembership(ctx context.Context) error {
	for g := uint64(0); g <= uint64(c.opts.Groups); g++ {
		deadline := time.Now().Add(15 * time.Second)
		for {
			reply, err := c.ListMembers(ctx, g)
			var voters, learners []uint64
			for _, m := range reply.GetMembers() {
				switch m.GetRole() {
				case memberpb.Role_ROLE_VOTER:
					voters = append(voters, m.GetId())
				default:
					learners = append(learners, m.GetId())
				}
			}
			slices.Sort(voters)
			want := c.ids(g)
			if err == nil && !reply.GetJoint() && len(learners) == 0 && slices.Equal(voters, want) {
				break
			}
			if time.Now().After(deadline) {
				if err != nil {
					return fmt.Errorf("membership of group %d: %w", g, err)
				}
				return fmt.Errorf("group %d: voters %v, learners or outgoing %v, joint %v; the replicas in service are %v",
					g, voters, learners, reply.GetJoint(), want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}
