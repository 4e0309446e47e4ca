package nemesis

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
)

// Real partitions
//
// A proxy that blackholes a link still closes the streams it carried when
// the fault starts, and a closed connection is the easy case. Real
// partitions close nothing: packets vanish and TCP sits in retransmission
// backoff. When the runner is root and iptables is present, every replica
// process (with Options.Nodes, every node) runs as its own user and the
// scenarios below drop packets with netfilter rules on loopback, matched by
// the sending socket's owner and the destination port:
//
//	a replica's raft traffic to a peer   owner uid(a), port of the link proxy a->b
//	clients (this process) to a replica  owner root,   port of the replica's inbound proxy
//	everything a replica sends           owner uid(a)
//	everything sent to a replica         owner root,   the replica's listen port (only proxies dial it)
//
// where a replica is its process: with Options.Nodes a rule on a replica
// acts on its node, every group's traffic. Every rule is removed on heal
// and on Close.

// NetfilterAvailable reports whether real partitions can be made here.
func NetfilterAvailable() bool {
	if os.Geteuid() != 0 {
		return false
	}
	_, err := exec.LookPath("iptables")
	return err == nil
}

// uidOf is the user a replica's own process runs as under netfilter
// faults, nodeUID a node's (node 0 to 2, Options.Nodes).
func uidOf(r Replica) uint32 { return 20000 + uint32(r.Group)*10 + uint32(r.ID) }
func nodeUID(n int) uint32   { return 21000 + uint32(n) + 1 }

// uid is the user the process hosting r runs as.
func (c *Cluster) uid(r Replica) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[r].uid
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// drop installs one DROP rule for packets on loopback from sockets owned by
// uid, to port (every port if empty).
func (c *Cluster) drop(uid uint32, toPort string) error {
	rule := []string{"OUTPUT", "-o", "lo", "-p", "tcp", "-m", "owner", "--uid-owner", strconv.FormatUint(uint64(uid), 10)}
	if toPort != "" {
		rule = append(rule, "--dport", toPort)
	}
	rule = append(rule, "-j", "DROP")
	if out, err := exec.Command("iptables", append([]string{"-I"}, rule...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("iptables -I %v: %v: %s", rule, err, out)
	}
	c.mu.Lock()
	c.rules = append(c.rules, rule)
	c.mu.Unlock()
	return nil
}

// clearRules removes every rule this cluster installed.
func (c *Cluster) clearRules() error {
	c.mu.Lock()
	rules := c.rules
	c.rules = nil
	c.mu.Unlock()
	var first error
	for _, rule := range rules {
		if out, err := exec.Command("iptables", append([]string{"-D"}, rule...)...).CombinedOutput(); err != nil && first == nil {
			first = fmt.Errorf("iptables -D %v: %v: %s", rule, err, out)
		}
	}
	return first
}

// DropLink silently drops the raft traffic from one replica to another
// (to a replica added by a membership change, at its inbound proxy).
func (c *Cluster) DropLink(from, to Replica) error {
	if l := c.Link(from, to); l != nil {
		return c.drop(c.uid(from), port(l.Addr()))
	}
	return c.drop(c.uid(from), port(c.Inbound(to).Addr()))
}

// DropClients silently drops the packets of every client of this process
// to replica r (its inbound address); other replicas still reach it.
func (c *Cluster) DropClients(r Replica) error {
	return c.drop(0, port(c.Inbound(r).Addr()))
}

// Silence makes r unreachable both ways: nothing it sends arrives, nothing
// sent to it arrives. The process runs on, unaware.
func (c *Cluster) Silence(r Replica) error {
	if err := c.drop(c.uid(r), ""); err != nil {
		return err
	}
	return c.drop(0, port(c.listenAddr(r)))
}
