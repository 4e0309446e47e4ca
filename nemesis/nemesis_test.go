package nemesis

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shardkv")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/shardkv").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

func seedFor(t *testing.T, i int) uint64 {
	if v := os.Getenv("SHARDKV_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return uint64(time.Now().UnixNano()) + uint64(i)
}

// mode is how a scenario runs: with TLS (Options.TLS), on nodes
// (Options.Nodes).
type mode struct{ tls, nodes bool }

// envMode is the mode NEMESIS_TLS and NEMESIS_NODES ask for.
func envMode() mode {
	return mode{tls: os.Getenv("NEMESIS_TLS") != "", nodes: os.Getenv("NEMESIS_NODES") != ""}
}

func runOne(t *testing.T, bin string, s Scenario, seed uint64, d time.Duration, m mode) {
	dir, err := os.MkdirTemp("", "shardkv-nemesis-"+s.Name+"-")
	if err != nil {
		t.Fatal(err)
	}
	env := ""
	if m.tls {
		env += " NEMESIS_TLS=1"
	}
	if m.nodes {
		env += " NEMESIS_NODES=1"
	}
	t.Logf("seed %d (rerun with SHARDKV_SEED=%d NEMESIS_SCENARIO=%s%s)", seed, seed, s.Name, env)
	ctx, cancel := context.WithTimeout(context.Background(), d+5*time.Minute)
	defer cancel()
	summary, err := Run(ctx, RunOptions{Binary: bin, Dir: dir, Scenario: s, Seed: seed, Duration: d, Logf: t.Logf,
		TLS: m.tls, Nodes: m.nodes})
	if errors.Is(err, ErrNoNetfilter) {
		os.RemoveAll(dir)
		t.Skip(err)
	}
	if err != nil {
		t.Errorf("%v\nkept the run (porcupine view, logs, data) in %s", err, dir)
		return
	}
	t.Log(summary)
	os.RemoveAll(dir)
}

// TestNemesis runs every scenario once, CI-sized (NEMESIS_DURATION per
// scenario, default 12s; NEMESIS_SCENARIO to run one; NEMESIS_TLS=1 with
// TLS, NEMESIS_NODES=1 on nodes).
func TestNemesis(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes under faults")
	}
	bin := buildBinary(t)
	d := envDuration("NEMESIS_DURATION", 12*time.Second)
	only := os.Getenv("NEMESIS_SCENARIO")
	for i, s := range Scenarios {
		if only != "" && s.Name != only {
			continue
		}
		t.Run(s.Name, func(t *testing.T) { runOne(t, bin, s, seedFor(t, i), d, envMode()) })
	}
}

// TestNemesisTLS runs one scenario with TLS on every connection (mutual
// TLS between replicas, the peer identity check on raft and shard
// handoff): joins, leaves, moves and kills, so that raft, shard pulls and
// deletes between groups, the admin path and the clients all run over TLS
// under faults. NEMESIS_TLS=1 runs every scenario so.
func TestNemesisTLS(t *testing.T) {
	runIn(t, mode{tls: true}, "NEMESIS_TLS", "reconfigure-and-kill")
}

// TestNemesisNodes runs scenarios with the groups' replicas on three nodes
// (Options.Nodes: three server processes, each hosting one replica of
// every group): joins, leaves and moves while whole nodes are killed (one
// replica of every group at once), a node hosting a leader stopped
// (SIGSTOP: every group it hosts must go on without its replica), and
// proxy partitions of nodes, where cutting the link between two nodes
// cuts every group's raft traffic between them, and a dead node replaced by
// a new one while clients run (replace-under-faults: a replica of every
// group added to the new node and hosted there without a restart, with a
// node killed and another cut off during the changes). NEMESIS_NODES=1
// runs every scenario on nodes (in TestNemesis).
func TestNemesisNodes(t *testing.T) {
	runIn(t, mode{nodes: true}, "NEMESIS_NODES", "reconfigure-and-kill", "pause-leader", "partitions", "replace-under-faults")
}

// runIn runs the named scenarios in mode m, CI-sized (NEMESIS_DURATION),
// unless env (which makes TestNemesis run every scenario in m) or
// NEMESIS_SCENARIO is set: TestNemesis runs them then.
func runIn(t *testing.T, m mode, env string, names ...string) {
	if testing.Short() {
		t.Skip("runs real processes under faults")
	}
	if os.Getenv(env) != "" || os.Getenv("NEMESIS_SCENARIO") != "" {
		t.Skipf("TestNemesis runs every scenario so (%s) or one chosen scenario", env)
	}
	bin := buildBinary(t)
	d := envDuration("NEMESIS_DURATION", 12*time.Second)
	ran := 0
	for i, s := range Scenarios {
		if slices.Contains(names, s.Name) {
			t.Run(s.Name, func(t *testing.T) { runOne(t, bin, s, seedFor(t, i), d, m) })
			ran++
		}
	}
	if ran != len(names) {
		t.Fatalf("ran %d of the scenarios %v", ran, names)
	}
}

// TestSoak repeats the scenarios with fresh seeds for SOAK (e.g. 30m).
func TestSoak(t *testing.T) {
	total := envDuration("SOAK", 0)
	if total == 0 {
		t.Skip("set SOAK=30m (make soak) to run")
	}
	bin := buildBinary(t)
	d := envDuration("NEMESIS_DURATION", 30*time.Second)
	deadline := time.Now().Add(total)
	runs := 0
	for i := 0; time.Now().Before(deadline); i++ {
		s := Scenarios[i%len(Scenarios)]
		t.Run(strings.ReplaceAll(s.Name, "/", "_")+"#"+strconv.Itoa(i), func(t *testing.T) {
			runOne(t, bin, s, uint64(time.Now().UnixNano()), d, envMode())
		})
		runs++
	}
	t.Logf("%d scenario runs in %v", runs, total)
}
