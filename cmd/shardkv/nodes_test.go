package main_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMultiProcessNodes runs three groups of three replicas on three
// `shardkv server` nodes (every node one replica of each group): the
// groups join, shards move, a whole node is killed (-9) and every key
// stays readable, and the node restarted with only --listen, --data and
// --controllers brings back every replica it hosts, which catch up. A node
// named two replicas of one group is refused before it starts.
func TestMultiProcessNodes(t *testing.T) {
	p := startNodeTest(t, 3)
	c, nodes, nodeAddr, members, join := p.c, p.nodes, p.addr, p.members, p.join

	// Placement is checked: two replicas of a group on one node.
	bad := fmt.Sprintf("1:1=%s,2=%s,3=%s", nodeAddr(0), nodeAddr(0), nodeAddr(1))
	out, err := exec.Command(p.bin, "server", "--listen", nodeAddr(0), "--data", filepath.Join(p.dir, "bad"), "--replica", bad).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "are both on this node") {
		t.Fatalf("two replicas of group 1 on one node: %v, %s", err, out)
	}

	for n := range 3 {
		var args []string
		for gid := 1; gid <= 3; gid++ {
			args = append(args, "--replica", fmt.Sprintf("%d:%s", gid, members(gid)))
		}
		p.start(n, args...)
	}
	c.ok("admin", "join", join(1), join(2), "--timeout", "30s")
	const keys = 12
	writeKeys(c, keys)
	c.ok("admin", "join", join(3), "--timeout", "30s")
	c.ok("admin", "move", "0", "3", "--timeout", "30s")
	waitSettled(t, c)

	readAll := func() { t.Helper(); readKeys(t, c, keys) }
	nodes[0].kill()
	readAll()
	c.ok("put", "during", "node 1 down", "--timeout", "30s")
	c.ok("admin", "leave", "1", "--timeout", "30s")
	// Restarted with no --replica: the node hosts what its data holds.
	p.start(0)
	nodes[0].waitOutput(t, "group1/1 group2/3 group3/2")
	waitSettled(t, c)
	waitAllReplicasCurrent(t, c)
	nodes[1].kill()
	readAll()
	if got := c.ok("get", "during", "--timeout", "30s"); got != "node 1 down\n" {
		t.Fatalf("during = %q", got)
	}
}

// nodeTest is a test of nodes: three controller processes, a CLI that
// uses them, and room for nodes (`shardkv server` processes), node n at
// addr(n), its data in dir/n<n+1>.
type nodeTest struct {
	t             *testing.T
	bin, dir      string
	ctls          string
	c             *cli
	addr          func(n int) string
	members, join func(gid int) string // spread over nodes 0, 1 and 2
	nodes         []*process           // node n's latest process
}

// startNodeTest starts the controllers of a test of n nodes.
func startNodeTest(t *testing.T, n int) *nodeTest {
	bin, dir, addr := processTest(t, 3+n)
	ctls, c := runControllers(t, bin, dir, addr)
	p := &nodeTest{t: t, bin: bin, dir: dir, ctls: ctls, c: c, addr: func(n int) string { return addr(3 + n) }, nodes: make([]*process, n)}
	p.members, p.join = spread(p.addr)
	return p
}

// start starts node n with args after its --listen, --data and
// --controllers, and waits until it serves.
func (p *nodeTest) start(n int, args ...string) {
	p.t.Helper()
	args = append([]string{"server", "--listen", p.addr(n), "--data", filepath.Join(p.dir, fmt.Sprintf("n%d", n+1)), "--controllers", p.ctls}, args...)
	p.nodes[n] = startProcess(p.t, p.bin, filepath.Join(p.dir, fmt.Sprintf("n%d-%d.log", n+1, time.Now().UnixNano())), args...)
	p.nodes[n].waitOutput(p.t, "replica serving")
}

// startTwoGroups starts a test of n nodes where nodes 0, 1 and 2 host
// groups 1 and 2 (named by --replica, spread), joined, with keys written
// (writeKeys).
func startTwoGroups(t *testing.T, n, keys int) *nodeTest {
	p := startNodeTest(t, n)
	for i := range 3 {
		p.start(i, "--replica", "1:"+p.members(1), "--replica", "2:"+p.members(2))
	}
	p.c.ok("admin", "join", p.join(1), p.join(2), "--timeout", "30s")
	writeKeys(p.c, keys)
	return p
}

// writeKeys puts key0=value0 ... key<n-1>.
func writeKeys(c *cli, n int) {
	c.t.Helper()
	for i := range n {
		c.ok("put", fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i), "--timeout", "30s")
	}
}

// readKeys checks that key0 ... key<n-1> read back as writeKeys put them.
func readKeys(t *testing.T, c *cli, n int) {
	t.Helper()
	for i := range n {
		if got := c.ok("get", fmt.Sprintf("key%d", i), "--timeout", "30s"); got != fmt.Sprintf("value%d\n", i) {
			t.Fatalf("key%d = %q", i, got)
		}
	}
}

// spread places replica i of group g on node (g+i-2) mod 3, as dev does,
// the node n being at nodeAddr(n): members(g) is group g's --replica
// members (ID=ADDR,...), join(g) its `admin join` argument.
func spread(nodeAddr func(n int) string) (members, join func(gid int) string) {
	at := func(gid, id int) string { return nodeAddr((gid + id - 2) % 3) }
	members = func(gid int) string {
		var m []string
		for id := 1; id <= 3; id++ {
			m = append(m, fmt.Sprintf("%d=%s", id, at(gid, id)))
		}
		return strings.Join(m, ",")
	}
	join = func(gid int) string {
		var a []string
		for id := 1; id <= 3; id++ {
			a = append(a, at(gid, id))
		}
		return fmt.Sprintf("%d=%s", gid, strings.Join(a, ","))
	}
	return members, join
}

// waitAllReplicasCurrent waits until every replica admin status lists
// answers, at the latest configuration.
func waitAllReplicasCurrent(t *testing.T, c *cli) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct {
			Config struct {
				Num uint64 `json:"num"`
			} `json:"config"`
			Groups []struct {
				ID       uint64 `json:"id"`
				Replicas []struct {
					Addr      string `json:"addr"`
					ConfigNum uint64 `json:"config"`
					Error     string `json:"error"`
				} `json:"replicas"`
			} `json:"groups"`
		}
		out, _, _ := c.run("", "admin", "status", "-o", "json")
		why := "no status"
		if json.Unmarshal([]byte(out), &st) == nil && len(st.Groups) > 0 {
			why = ""
			for _, g := range st.Groups {
				for _, r := range g.Replicas {
					if r.Error != "" || r.ConfigNum != st.Config.Num {
						why = fmt.Sprintf("group %d replica at %s: configuration %d of %d, error %q", g.ID, r.Addr, r.ConfigNum, st.Config.Num, r.Error)
					}
				}
			}
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas not current after 60s: %s\n%s", why, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
