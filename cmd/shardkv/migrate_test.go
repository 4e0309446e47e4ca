package main_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMigrateProcessesToNodes follows README's "Moving one-replica
// processes onto nodes" step by step: two groups whose replicas run one
// per process (`server --group --id --peers`) move, one replica of each
// group at a time, onto three nodes: start the node empty, member add in
// each group (the running node hosts the new replica), member replace in
// each group, stop the old processes. Every key written before and during the move reads
// back, the configuration names only the nodes, and the nodes restarted
// with only --listen, --data and --controllers still serve.
func TestMigrateProcessesToNodes(t *testing.T) {
	const groups = 2
	m := migrateProcessesToNodes(t, groups, true)
	c, nodeAddr, nodes, startNode, keys := m.c, m.nodeAddr, m.nodes, m.startNode, m.keys
	want := []string{nodeAddr(1), nodeAddr(2), nodeAddr(3)}
	for g := 1; g <= groups; g++ {
		if got := memberList(t, c, fmt.Sprint(g), "%[1]d:%[3]s", " "); got != "4:voter 5:voter 6:voter" {
			t.Fatalf("group %d after the move: %s, want 4:voter 5:voter 6:voter", g, got)
		}
		waitConfigNames(t, c, fmt.Sprint(g), want...)
		if got := configReplicas(t, c)[fmt.Sprint(g)]; len(got) != len(want) {
			t.Fatalf("group %d's replicas in the configuration: %v, want %v", g, got, want)
		}
	}
	readAll := func() {
		t.Helper()
		want := map[string]string{}
		for i := range keys {
			want[fmt.Sprintf("key%d", i)] = fmt.Sprintf("value%d", i)
		}
		for i := 1; i <= 3; i++ {
			want[fmt.Sprintf("learner%d", i)] = fmt.Sprintf("added %d", i)
			want[fmt.Sprintf("moved%d", i)] = fmt.Sprintf("stopped %d", i)
		}
		for k, v := range want {
			if got := c.ok("get", k, "--timeout", "30s"); got != v+"\n" {
				t.Fatalf("%s = %q, want %q", k, got, v)
			}
		}
	}
	readAll()

	// The nodes restart from their data directories alone.
	for i := 1; i <= 3; i++ {
		nodes[i].stop(t)
	}
	for i := 1; i <= 3; i++ {
		startNode(i)
	}
	for i := 1; i <= 3; i++ {
		nodes[i].waitOutput(t, fmt.Sprintf("group1/%d group2/%d", 3+i, 3+i))
	}
	readAll()
	c.ok("put", "after", "restart", "--timeout", "30s")
	if got := c.ok("get", "after", "--timeout", "30s"); got != "restart\n" {
		t.Fatalf("after = %q", got)
	}
	waitAllReplicasCurrent(t, c)
}

// TestMigrateProcessesToNodesBackToBack runs the move with no wait
// between a step's member replace and the stop of its old processes:
// the configuration must still end up naming exactly the three nodes,
// within 20 s. A group's leader that joined it later once took the
// members added before it for the group's founders, whose addresses it
// never writes (the controller is assumed to have them): it led on with
// the configuration naming stopped processes and not the node of
// replica 4. Members now learn the founders from their leader's
// snapshot.
func TestMigrateProcessesToNodesBackToBack(t *testing.T) {
	const groups = 2
	m := migrateProcessesToNodes(t, groups, false)
	want := []string{m.nodeAddr(1), m.nodeAddr(2), m.nodeAddr(3)}
	slices.Sort(want)
	start := time.Now()
	for deadline := start.Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		got := configReplicas(t, m.c)
		exact := true
		for g := 1; g <= groups; g++ {
			has := slices.Sorted(slices.Values(got[fmt.Sprint(g)]))
			exact = exact && slices.Equal(has, want)
		}
		if exact {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20 s after the move, the configuration's replicas are %v, want %v for every group", got, want)
		}
	}
	t.Logf("the configuration named exactly the nodes %v after the move", time.Since(start).Round(time.Millisecond))
	// Asked only now: until the configuration names a live replica, a
	// client finds none (README's wait between steps is for that).
	for g := 1; g <= groups; g++ {
		if got := memberList(t, m.c, fmt.Sprint(g), "%[1]d:%[3]s", " "); got != "4:voter 5:voter 6:voter" {
			t.Fatalf("group %d after the move: %s, want 4:voter 5:voter 6:voter", g, got)
		}
	}
}

// migration is a move of one-replica processes onto three nodes, done
// (see migrateProcessesToNodes).
type migration struct {
	c         *cli
	nodeAddr  func(i int) string
	nodes     map[int]*process
	startNode func(i int, args ...string)
	keys      int // key0... written before the move
}

// migrateProcessesToNodes starts groups groups of one-replica processes,
// joins them, writes keys, and moves them onto three nodes as README's
// "Moving one-replica processes onto nodes" says. waitEachStep: before
// stopping a step's old processes, wait until the configuration names
// the step's node, as README does; without it, the steps run back to
// back.
func migrateProcessesToNodes(t *testing.T, groups int, waitEachStep bool) migration {
	t.Helper()
	bin, dir, addr := processTest(t, 3+3*groups+3)
	ctls, c := runControllers(t, bin, dir, addr)
	// The old way: replica i of group g is a process at oldAddr(g, i).
	oldAddr := func(g, i int) string { return addr(3*g + i - 1) }
	nodeAddr := func(i int) string { return addr(3*groups + 2 + i) }
	old := map[[2]int]*process{}
	var join []string
	for g := 1; g <= groups; g++ {
		peers := fmt.Sprintf("1=%s,2=%s,3=%s", oldAddr(g, 1), oldAddr(g, 2), oldAddr(g, 3))
		for id := 1; id <= 3; id++ {
			old[[2]int{g, id}] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("g%d-%d.log", g, id)), "server",
				"--group", fmt.Sprint(g), "--id", fmt.Sprint(id), "--listen", oldAddr(g, id), "--peers", peers,
				"--controllers", ctls, "--data", filepath.Join(dir, fmt.Sprintf("g%d-%d", g, id)))
		}
		join = append(join, fmt.Sprintf("%d=%s,%s,%s", g, oldAddr(g, 1), oldAddr(g, 2), oldAddr(g, 3)))
	}
	for _, p := range old {
		p.waitOutput(t, "replica serving")
	}
	c.ok(append([]string{"admin", "join", "--timeout", "30s"}, join...)...)
	keys := 12
	for i := range keys {
		c.ok("put", fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i), "--timeout", "30s")
	}

	// The move, one replica of each group at a time: old replica i of
	// every group becomes replica 3+i of that group, on node i.
	nodes := map[int]*process{}
	startNode := func(i int, args ...string) {
		args = append([]string{"server", "--listen", nodeAddr(i), "--data", filepath.Join(dir, fmt.Sprintf("n%d", i)), "--controllers", ctls}, args...)
		nodes[i] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("n%d-%d.log", i, time.Now().UnixNano())), args...)
		nodes[i].waitOutput(t, "replica serving")
	}
	for i := 1; i <= 3; i++ {
		newID := fmt.Sprint(3 + i)
		startNode(i) // empty: member add makes it host each group's new replica
		for g := 1; g <= groups; g++ {
			if out := c.ok("admin", "member", "add", fmt.Sprint(g), newID, nodeAddr(i), "--timeout", "30s"); !strings.Contains(out, "hosts it now") {
				t.Fatalf("member add %d %s %s: the node did not host it:\n%s", g, newID, nodeAddr(i), out)
			}
		}
		c.ok("put", fmt.Sprintf("learner%d", i), fmt.Sprintf("added %d", i), "--timeout", "30s")
		for g := 1; g <= groups; g++ {
			replaceMember(t, c, fmt.Sprint(g), fmt.Sprint(i), newID)
			if waitEachStep {
				// Before the old process stops: its group's leader
				// has told the controller, so clients find the new
				// replica (see README).
				waitConfigNames(t, c, fmt.Sprint(g), nodeAddr(i))
			}
		}
		for g := 1; g <= groups; g++ {
			old[[2]int{g, i}].stop(t)
		}
		c.ok("put", fmt.Sprintf("moved%d", i), fmt.Sprintf("stopped %d", i), "--timeout", "30s")
	}
	return migration{c: c, nodeAddr: nodeAddr, nodes: nodes, startNode: startNode, keys: keys}
}
