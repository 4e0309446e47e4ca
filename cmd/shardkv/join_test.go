package main_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestJoinTypoRefused is issue 14's first repro through the binary:
// `shardkv dev`, then `shardkv admin join 4=127.0.0.1` (port forgotten)
// used to create configuration 2, giving group 4 a quarter of the shards
// for good. The controller now refuses a join whose replicas are not
// running replicas of that group, naming the replica and why, and nothing
// changes.
func TestJoinTypoRefused(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	base := freePorts(t, 12)
	dead := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1))
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	c := &cli{t: t, bin: bin, controllers: strings.Join([]string{addr(0), addr(1), addr(2)}, ",")}
	dev := startProcess(t, bin, filepath.Join(dir, "dev.log"), "dev", "--processes", "1", "--data", filepath.Join(dir, "data"),
		"--base-port", fmt.Sprint(base), "--http", "127.0.0.1:0")
	dev.waitOutput(t, "try: shardkv put")
	c.ok("put", "greeting", "hello")

	for _, tc := range []struct {
		join string
		says []string
	}{
		{"4=127.0.0.1", []string{`"127.0.0.1" is not host:port`, "missing port"}},
		{"4=" + dead, []string{dead, "did not answer"}},
		{"4=" + addr(3), []string{addr(3) + " is replica 1 of group 1, not of group 4"}},
		{"4=" + addr(0), []string{addr(0) + " serves no replica group"}},
	} {
		out, errOut, code := c.run("", "admin", "join", tc.join)
		if code == 0 {
			t.Fatalf("join %s accepted: %s", tc.join, out)
		}
		for _, s := range tc.says {
			if !strings.Contains(errOut, s) {
				t.Fatalf("join %s: %q does not say %q", tc.join, errOut, s)
			}
		}
		t.Logf("join %s: exit %d: %s", tc.join, code, strings.TrimSpace(errOut))
	}
	if out := c.ok("admin", "config"); !strings.Contains(out, "configuration 1") {
		t.Fatalf("after the refused joins: %s", out)
	}
	if out := c.ok("get", "greeting"); out != "hello\n" {
		t.Fatalf("get after the refused joins: %q", out)
	}
	dev.stop(t)
}
