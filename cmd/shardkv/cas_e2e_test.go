package main_test

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// TestE2EConditionalWrites: get -o json shows the version; put, append
// and delete with --if-version or --if-value write only when it holds,
// and exit 6 with the key's version on stderr when it does not.
func TestE2EConditionalWrites(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	base := freePorts(t, devPorts)
	_, c, _ := startDev(t, bin, filepath.Join(dir, "data"), filepath.Join(dir, "dev.log"), base)

	version := func(key string, code int) uint64 {
		t.Helper()
		out, _ := c.expect(code, "", nil, "get", key, "-o", "json")
		var got struct{ Version uint64 }
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("get -o json: %q: %v", out, err)
		}
		return got.Version
	}
	if v := version("counter", 1); v != 0 {
		t.Fatalf("a missing key at version %d", v)
	}
	c.expect(0, "", nil, "put", "counter", "1", "--if-version", "0")
	c.expect(6, "", []string{`not written: the condition did not hold for key "counter": its version is 1`},
		"put", "counter", "1", "--if-version", "0")
	c.expect(0, "", nil, "append", "counter", "0", "--if-version", "1")
	if v := version("counter", 0); v != 2 {
		t.Fatalf("version %d after a put and an append, want 2", v)
	}
	if out := c.ok("get", "counter"); out != "10\n" {
		t.Fatalf("get: %q", out)
	}
	c.expect(6, "", []string{"its version is 2"}, "put", "counter", "11", "--if-value", "9")
	c.expect(2, "", []string{"--if-version and --if-value cannot be used together"},
		"put", "counter", "11", "--if-value", "10", "--if-version", "2")
	c.expect(6, "", []string{"its version is 2"}, "delete", "counter", "--if-value", "1")
	c.expect(0, "", nil, "delete", "counter", "--if-value", "10")
	c.expect(6, "", []string{"it does not exist (version 0)"}, "delete", "counter", "--if-version", "2")
	c.expect(1, "", nil, "get", "counter")
}
