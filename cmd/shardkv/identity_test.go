package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// refused starts a process that must refuse to start: exit at once, with
// a usage error (2) or a refusal (4), not a crash, and an output
// containing every want.
func refused(t *testing.T, bin, logPath string, want []string, args ...string) {
	t.Helper()
	p := startProcess(t, bin, logPath, args...)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatalf("%v kept running", args)
	}
	b := p.exitedWith(t, fmt.Sprint(args), 2, 4) // usage, refused
	for _, w := range want {
		if !strings.Contains(string(b), w) {
			t.Fatalf("%v: no %q in:\n%s", args, w, b)
		}
	}
	t.Logf("refused: %s", strings.TrimSpace(string(b)))
}

// TestMembershipMismatchRefused is issue 10's repro: controller 1 started
// alone, then restarted with two more (empty) replicas in --peers, used to
// answer as a second leader with its own configuration 1. Now the
// restarted replica refuses to start, an empty replica told it joins an
// existing cluster refuses too, and a group replica pointed at another
// cluster's controllers refuses.
func TestMembershipMismatchRefused(t *testing.T) {
	bin := binary(t)
	t.Setenv("SHARDKV_UNSAFE_SKIP_JOIN_CHECK", "1") // group 1 joins before it runs
	dir := t.TempDir()
	base := freePorts(t, 6)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	data := func(name string) string { return filepath.Join(dir, name) }
	logf := func(name string) string { return filepath.Join(dir, name+".log") }

	alone := []string{"controller", "--id", "1", "--listen", addr(0), "--peers", "1=" + addr(0), "--data", data("c1")}
	c1 := startProcess(t, bin, logf("c1"), alone...)
	c := &cli{t: t, bin: bin, controllers: addr(0)}
	c.ok("admin", "join", "1=10.0.0.1:1", "--timeout", "30s")
	// A group replica of this cluster learns its id on first start.
	g1 := []string{"server", "--group", "1", "--id", "1", "--listen", addr(3), "--peers", "1=" + addr(3),
		"--data", data("g1"), "--controllers", addr(0)}
	g := startProcess(t, bin, logf("g1"), g1...)
	g.waitOutput(t, "replica serving")
	g.stop(t)
	c1.stop(t)

	three := fmt.Sprintf("1=%s,2=%s,3=%s", addr(0), addr(1), addr(2))
	refused(t, bin, logf("c1-three"), []string{"different membership", data("c1"), "1=" + addr(0)},
		"controller", "--id", "1", "--listen", addr(0), "--peers", three, "--data", data("c1"))
	refused(t, bin, logf("c2-existing"), []string{"holds no replica", data("c2")},
		"controller", "--id", "2", "--listen", addr(1), "--peers", three, "--data", data("c2"), "--initial-cluster-state", "existing")

	// Another cluster, on other addresses: the group replica of the first
	// one, pointed at it, refuses to start.
	other := startProcess(t, bin, logf("other"), "controller", "--id", "1", "--listen", addr(4), "--peers", "1="+addr(4), "--data", data("other"))
	(&cli{t: t, bin: bin, controllers: addr(4)}).ok("admin", "config", "--timeout", "30s")
	g1[len(g1)-1] = addr(4)
	refused(t, bin, logf("g1-other"), []string{"another cluster", data("g1")}, g1...)
	other.stop(t)

	// With its original flags the first cluster still works.
	c1 = startProcess(t, bin, logf("c1-again"), alone...)
	if out := c.ok("admin", "config", "--timeout", "30s"); !strings.Contains(out, "configuration 1") {
		t.Fatalf("after the refusals: %s", out)
	}
	c1.stop(t)
}

// TestWipedReplicaRefused: a replica whose data directory was emptied
// (say, after its WAL was found corrupted) and that is restarted with its
// original flags must not start over as a new member while its group's
// leader holds its acknowledgements.
func TestWipedReplicaRefused(t *testing.T) {
	bin := binary(t)
	t.Setenv("SHARDKV_UNSAFE_SKIP_JOIN_CHECK", "1") // group 1 does not run
	dir := t.TempDir()
	base := freePorts(t, 3)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	peers := fmt.Sprintf("1=%s,2=%s,3=%s", addr(0), addr(1), addr(2))
	args := func(id int) []string {
		return []string{"controller", "--id", fmt.Sprint(id), "--listen", addr(id - 1), "--peers", peers,
			"--data", filepath.Join(dir, fmt.Sprintf("c%d", id))}
	}
	procs := map[int]*process{}
	for id := 1; id <= 3; id++ {
		procs[id] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("c%d.log", id)), args(id)...)
	}
	c := &cli{t: t, bin: bin, controllers: strings.Join([]string{addr(0), addr(1), addr(2)}, ",")}
	c.ok("admin", "join", "1=10.0.0.1:1", "--timeout", "30s")
	// Stop a replica that is not the leader... any replica will do: the
	// other two keep a leader, which remembers what it acknowledged.
	procs[3].stop(t)
	if err := os.RemoveAll(filepath.Join(dir, "c3")); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for attempt := 0; ; attempt++ {
		p := startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("c3-wiped-%d.log", attempt)), args(3)...)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.kill()
		}
		out, _ = os.ReadFile(p.log)
		if goCrash.Match(out) {
			t.Fatalf("the wiped replica crashed instead of refusing:\n%s", crashHead(out, 4000))
		}
		// Refused by itself (exit 4), not killed still running.
		if p.cmd.ProcessState.ExitCode() == 4 && strings.Contains(string(out), "lost its data") {
			break
		}
		// Replica 3 may have led: wait for the others' new leader to
		// learn of it, with a fresh data directory each time.
		if attempt == 3 {
			t.Fatalf("a wiped replica was not refused:\n%s", out)
		}
		_ = os.RemoveAll(filepath.Join(dir, "c3"))
		time.Sleep(time.Second)
	}
	t.Logf("refused: %s", strings.TrimSpace(string(out)))
	if o := c.ok("admin", "config", "--timeout", "30s"); !strings.Contains(o, "configuration 1") {
		t.Fatalf("the others: %s", o)
	}
}
