package main_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestE2EAuth turns auth on in a `dev --tls` cluster of processes with the
// CLI alone: without credentials a request is refused, a read-only user
// reads but cannot write or move a shard, the admin can; the change is
// audited with the admin's name, and no password reaches the log.
func TestE2EAuth(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	p, c, _ := startDev(t, bin, filepath.Join(dir, "data"), filepath.Join(dir, "dev.log"), freePorts(t, devPorts), "--tls", "--processes", "3")
	flags := devClientFlags(t, p)
	with := func(args ...string) []string { return append(args, flags...) }
	const rootPW, roPW = "root-Secret-pw-8812", "ro-Secret-pw-2291"
	root, ro := []string{"--user", "root", "--password", rootPW}, []string{"--user", "ro", "--password", roPW}

	c.ok(with("put", "greeting", "hello")...)
	c.expect(4, "", []string{"no user has the admin role"}, with("admin", "auth", "enable")...)
	c.ok(with("admin", "auth", "user", "add", "root", "--new-password", rootPW)...)
	c.ok(with("admin", "auth", "user", "grant-role", "root", "admin")...)
	c.ok(with("admin", "auth", "user", "add", "ro", "--new-password", roPW)...)
	c.ok(with("admin", "auth", "role", "add", "reader")...)
	c.ok(with("admin", "auth", "role", "grant", "reader", "read", "")...)
	c.ok(with("admin", "auth", "user", "grant-role", "ro", "reader")...)
	c.expect(2, "", []string{"not read, write or readwrite"}, with("admin", "auth", "role", "grant", "reader", "reed", "x")...)
	if got := c.ok(with("admin", "auth", "enable")...); !strings.Contains(got, "auth enabled") {
		t.Fatalf("auth enable printed %q", got)
	}

	// The group processes learn it within the bound.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errOut, code := c.run("", with("get", "greeting", "--timeout", "3s")...)
		if code == 4 && strings.Contains(errOut, "authentication failed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a get without credentials: exit %d, %s", code, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := c.ok(with(append([]string{"get", "greeting"}, ro...)...)...); got != "hello\n" {
		t.Fatalf("ro's get = %q", got)
	}
	c.expect(4, "", []string{"permission denied", "write on key"}, with(append([]string{"put", "greeting", "bye"}, ro...)...)...)
	c.expect(4, "", []string{"permission denied", "admin role"}, with(append([]string{"admin", "move", "0", "1"}, ro...)...)...)
	c.ok(with(append([]string{"admin", "move", "0", "1"}, root...)...)...)
	if got := c.ok(with(append([]string{"admin", "auth", "user", "list"}, root...)...)...); !strings.Contains(got, "ro") || !strings.Contains(got, "reader") {
		t.Fatalf("user list:\n%s", got)
	}

	log, _ := os.ReadFile(p.log)
	if !regexp.MustCompile(`msg=audit .*Controller/Move user=root`).Match(log) {
		t.Error("the admin's move is not audited with its user")
	}
	for _, pw := range []string{rootPW, roPW} {
		if strings.Contains(string(log), pw) {
			t.Error("a password is in the processes' log")
		}
	}
}
