package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binary builds the shardkv binary once per test binary run.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "shardkv")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// freePorts finds n consecutive free ports on 127.0.0.1.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for attempt := 0; attempt < 100; attempt++ {
		base := 10000 + rand.IntN(20000) // below the ephemeral range
		var ls []net.Listener
		ok := true
		for p := base; p < base+n; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

type cli struct {
	t           *testing.T
	bin         string
	controllers string
}

func (c *cli) run(stdin string, args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), "SHARDKV_CONTROLLERS="+c.controllers)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		c.t.Fatalf("run %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run("", args...)
	if code != 0 {
		c.t.Fatalf("shardkv %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// process is a background shardkv process with its output in a file.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // its exit error, once done
}

func startProcess(t *testing.T, bin, logPath string, args ...string) *process {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := &process{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("exit after SIGTERM: %v", p.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
}

// waitOutput waits until the process's output contains s.
func (p *process) waitOutput(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(p.log)
		if bytes.Contains(b, []byte(s)) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.log)
	t.Fatalf("no %q in output:\n%s", s, b)
}

func TestDevClusterEndToEnd(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	base := freePorts(t, 12)
	c := &cli{t: t, bin: bin, controllers: fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", base, base+1, base+2)}
	args := []string{"dev", "--data", filepath.Join(dir, "data"), "--base-port", fmt.Sprint(base), "--http", "127.0.0.1:0"}
	dev := startProcess(t, bin, filepath.Join(dir, "dev1.log"), args...)
	dev.waitOutput(t, "try: shardkv put")

	c.ok("put", "greeting", "hello")
	if out := c.ok("get", "greeting"); out != "hello\n" {
		t.Fatalf("get printed %q", out)
	}
	c.ok("append", "greeting", ", world")
	if _, _, code := c.run("", "put", "fromstdin", "-"); code != 0 {
		t.Fatal("put from stdin failed")
	}
	c.run("piped value", "put", "fromstdin", "-")
	if out := c.ok("get", "fromstdin"); out != "piped value\n" {
		t.Fatalf("stdin value: %q", out)
	}
	c.ok("put", "doomed", "x")
	c.ok("delete", "doomed")
	out, errOut, code := c.run("", "get", "doomed")
	if code != 1 || out != "" || !strings.Contains(errOut, "not found") {
		t.Fatalf("get of a deleted key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := c.run("", "get"); code == 0 || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Fatalf("usage error: exit %d, %q", code, errOut)
	}
	if out := c.ok("admin", "config"); !strings.Contains(out, "configuration 1") {
		t.Fatalf("admin config: %s", out)
	}
	var st struct {
		Settled bool `json:"settled"`
		Groups  []struct {
			Replicas []struct {
				Leader bool `json:"leader"`
			} `json:"replicas"`
		} `json:"groups"`
	}
	if err := json.Unmarshal([]byte(c.ok("admin", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Groups) != 3 {
		t.Fatalf("status shows %d groups", len(st.Groups))
	}
	if _, errOut, code := c.run("", "admin", "leave", "9"); code == 0 || !strings.Contains(errOut, "unknown group") {
		t.Fatalf("leave of an unknown group: exit %d, %q", code, errOut)
	}
	// Values over the limit from stdin: refused at once, and a 100 MB one
	// without the CLI holding it in memory.
	start := time.Now()
	if _, errOut, code := c.run(strings.Repeat("v", 5<<20), "put", "big", "-"); code == 0 || !strings.Contains(errOut, "value too large") {
		t.Fatalf("5 MB value: exit %d, %q", code, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a 5 MB value took %v to be refused", d)
	}
	// GNU time forks the CLI itself, so its peak RSS is the CLI's own (a
	// child of this test would share the test's memory until exec). CI
	// installs it; without it only the refusal is checked.
	var rssFile string
	huge := exec.Command(bin, "put", "big", "-")
	if _, err := os.Stat("/usr/bin/time"); err == nil {
		rssFile = filepath.Join(dir, "rss")
		huge = exec.Command("/usr/bin/time", "-f", "%M", "-o", rssFile, bin, "put", "big", "-")
	} else {
		t.Log("no /usr/bin/time (Debian package time): the CLI's memory is not measured")
	}
	huge.Env = append(os.Environ(), "SHARDKV_CONTROLLERS="+c.controllers)
	huge.Stdin = io.LimitReader(zeros{}, 100<<20)
	hugeOut, err := huge.CombinedOutput()
	if err == nil || !strings.Contains(string(hugeOut), "value too large") {
		t.Fatalf("100 MB value: %v: %s", err, hugeOut)
	}
	if rssFile != "" {
		rssOut, _ := os.ReadFile(rssFile)
		lines := strings.Fields(string(rssOut))
		if len(lines) == 0 {
			t.Fatalf("no peak RSS from GNU time: %q", rssOut)
		}
		rss, err := strconv.Atoi(lines[len(lines)-1]) // KiB
		if err != nil {
			t.Fatalf("peak RSS %q: %v", rssOut, err)
		}
		if rss > 64<<10 {
			t.Fatalf("the CLI used %d MiB for a 100 MB value it refuses", rss>>10)
		}
		t.Logf("the CLI refused a 100 MB value using %d MiB", rss>>10)
	}
	if _, _, code := c.run("", "get", "big"); code != 1 {
		t.Fatal("a refused value was written")
	}

	dev.stop(t)
	dev = startProcess(t, bin, filepath.Join(dir, "dev2.log"), args...)
	dev.waitOutput(t, "try: shardkv put")
	if out := c.ok("get", "greeting"); out != "hello, world\n" {
		t.Fatalf("after restart: %q", out)
	}
	dev.stop(t)
	// Fewer groups than the cluster has would strand their shards.
	refused(t, bin, filepath.Join(dir, "dev-fewer-groups.log"), []string{"--groups 3", filepath.Join(dir, "data")},
		append(args, "--groups", "2")...)
}

// TestMultiProcessCluster runs every replica as its own process: three
// controller replicas and two groups, then a third group joins, shards
// move, one replica of each group is killed, and every key is still there.
func TestMultiProcessCluster(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	base := freePorts(t, 12)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	peers := func(first int) string {
		return fmt.Sprintf("1=%s,2=%s,3=%s", addr(first), addr(first+1), addr(first+2))
	}
	ctls := strings.Join([]string{addr(0), addr(1), addr(2)}, ",")
	c := &cli{t: t, bin: bin, controllers: ctls}
	for id := 1; id <= 3; id++ {
		startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("c%d.log", id)), "controller", "--id", fmt.Sprint(id),
			"--listen", addr(id-1), "--peers", peers(0), "--data", filepath.Join(dir, fmt.Sprintf("c%d", id)))
	}
	servers := map[[2]int]*process{}
	startGroup := func(gid int) string {
		first := 3 * gid
		for id := 1; id <= 3; id++ {
			servers[[2]int{gid, id}] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("g%d-%d.log", gid, id)),
				"server", "--group", fmt.Sprint(gid), "--id", fmt.Sprint(id), "--listen", addr(first+id-1),
				"--peers", peers(first), "--data", filepath.Join(dir, fmt.Sprintf("g%d-%d", gid, id)))
		}
		for id := 1; id <= 3; id++ { // the controller checks every replica of a join
			servers[[2]int{gid, id}].waitOutput(t, "replica serving")
		}
		return fmt.Sprintf("%d=%s,%s,%s", gid, addr(first), addr(first+1), addr(first+2))
	}
	t.Setenv("SHARDKV_CONTROLLERS", ctls) // servers read it too
	g1, g2 := startGroup(1), startGroup(2)
	c.ok("admin", "join", g1, g2, "--timeout", "30s")

	keys := 12
	for i := 0; i < keys; i++ {
		c.ok("put", fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i), "--timeout", "30s")
	}
	g3 := startGroup(3)
	if out := c.ok("admin", "join", g3, "--timeout", "30s"); !strings.Contains(out, "configuration 2") {
		t.Fatalf("join of group 3: %s", out)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var st struct {
			Settled bool `json:"settled"`
		}
		out, _, _ := c.run("", "admin", "status", "-o", "json")
		if json.Unmarshal([]byte(out), &st) == nil && st.Settled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shards did not settle:\n%s", c.ok("admin", "status"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for gid := 1; gid <= 3; gid++ {
		servers[[2]int{gid, 1 + rand.IntN(3)}].kill()
	}
	for i := 0; i < keys; i++ {
		out := c.ok("get", fmt.Sprintf("key%d", i), "--timeout", "30s")
		if out != fmt.Sprintf("value%d\n", i) {
			t.Fatalf("key%d = %q", i, out)
		}
	}
}

// zeros reads as an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
