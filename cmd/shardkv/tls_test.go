package main_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/shardkv/shardkv/internal/devcert"
	"github.com/shardkv/shardkv/internal/rpc"
)

// TestE2EDevTLS runs `shardkv dev --tls` and the CLI with the flags it
// prints: commands work with them and fail without them; then every
// certificate is replaced by one of a new CA and the process gets SIGHUP:
// the CLI trusting only the new CA gets through, so new connections see
// the new server certificate, and the cluster keeps serving writes. Both
// ways dev runs: in one process, and as controller and node processes
// (which dev passes the SIGHUP on to).
func TestE2EDevTLS(t *testing.T) {
	bin := binary(t)
	for _, processes := range []string{"1", "3"} {
		t.Run("processes="+processes, func(t *testing.T) { devTLS(t, bin, processes) })
	}
}

// devClientFlags are the client TLS flags `dev --tls` printed.
func devClientFlags(t *testing.T, p *process) []string {
	t.Helper()
	out, _ := os.ReadFile(p.log)
	m := regexp.MustCompile(`clients need (--cacert \S+ --cert \S+ --key \S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("dev --tls printed no client flags:\n%s", out)
	}
	return strings.Fields(string(m[1]))
}

func devTLS(t *testing.T, bin, processes string) {
	dir := t.TempDir()
	p, c, _ := startDev(t, bin, filepath.Join(dir, "data"), filepath.Join(dir, "dev.log"), freePorts(t, devPorts), "--tls", "--processes", processes)
	flags := devClientFlags(t, p)
	with := func(args ...string) []string { return append(args, flags...) }

	c.ok(with("put", "greeting", "hello")...)
	if got := c.ok(with("get", "greeting")...); got != "hello\n" {
		t.Fatalf("get greeting = %q", got)
	}
	c.ok(with("admin", "status")...)
	if _, errOut, code := c.run("", "get", "greeting", "--timeout", "2s"); code == 0 {
		t.Fatal("a plaintext get was served")
	} else if !strings.Contains(errOut, "TLS") {
		t.Errorf("a plaintext get's error does not point at TLS: %s", errOut)
	}
	if _, _, code := c.run("", "get", "greeting", "--timeout", "2s", flags[0], flags[1]); code == 0 {
		t.Fatal("a get without a client certificate was served")
	}
	// Flags that cannot work are usage errors, before anything starts.
	c.expect(2, "", []string{"--cert and --key go together"}, "get", "greeting", "--cert", flags[3])
	c.expect(2, "", []string{"--cert and --key go together"}, "controller", "--id", "1", "--listen", "127.0.0.1:0",
		"--peers", "1=127.0.0.1:1", "--data", filepath.Join(dir, "c1"), "--cert", flags[3])
	c.expect(2, "", []string{"need --cert and --key"}, "server", "--group", "1", "--id", "1", "--listen", "127.0.0.1:0",
		"--peers", "1=127.0.0.1:1", "--data", filepath.Join(dir, "s1"), "--client-cert-auth")

	// Rotate: a new CA, new node and client certificates, same files.
	node := readCert(t, filepath.Join(dir, "data", "tls", "node.pem"))
	ca, err := devcert.NewCA("rotated CA")
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(dir, "data", "tls")
	if _, _, err := ca.IssueFiles(tlsDir, "node", devcert.Leaf{CommonName: "rotated-node", Hosts: []string{"127.0.0.1", "::1", "localhost"},
		URIs: node.URIs, Server: true, Client: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.IssueFiles(tlsDir, "client", devcert.Leaf{CommonName: "rotated-client", Client: true}); err != nil {
		t.Fatal(err)
	}
	if err := devcert.WriteFile(filepath.Join(tlsDir, "ca.pem"), ca.PEM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if got := c.ok(with("get", "greeting", "--timeout", "20s")...); got != "hello\n" {
		t.Fatalf("get greeting after the rotation = %q", got)
	}
	// Writes to every group go through after the rotation.
	for i := range 16 {
		c.ok(with("put", fmt.Sprintf("after-%d", i), "x", "--timeout", "20s")...)
	}
	if p.exited() {
		t.Fatal("dev exited on SIGHUP")
	}
	p.stop(t)
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestE2EMultiProcessTLS runs a controller and two groups as processes
// with mutual TLS and client certificates required: the servers learn the
// cluster id from the controller, the controller's join check reaches
// them, and a shard pull between the groups goes through, all with the
// peer certificate; the CLI works with its flags' environment variables.
func TestE2EMultiProcessTLS(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	base := freePorts(t, 3)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	const clusterID = 0x5eed
	certs, err := devcert.WriteLocal(filepath.Join(dir, "tls"), rpc.PeerURI(clusterID))
	if err != nil {
		t.Fatal(err)
	}
	tlsFlags := []string{"--cert", certs.NodeCert, "--key", certs.NodeKey, "--trusted-ca", certs.CAFile, "--client-cert-auth"}
	startProcess(t, bin, filepath.Join(dir, "c1.log"), append([]string{"controller", "--id", "1", "--listen", addr(0),
		"--peers", "1=" + addr(0), "--data", filepath.Join(dir, "c1"), "--cluster-id", fmt.Sprintf("%x", clusterID)}, tlsFlags...)...)
	for g := 1; g <= 2; g++ {
		p := startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("g%d.log", g)), append([]string{"server", "--group", fmt.Sprint(g),
			"--id", "1", "--listen", addr(g), "--peers", "1=" + addr(g), "--data", filepath.Join(dir, fmt.Sprintf("g%d", g)),
			"--controllers", addr(0)}, tlsFlags...)...)
		p.waitOutput(t, "replica serving")
	}
	t.Setenv("SHARDKV_CACERT", certs.CAFile)
	t.Setenv("SHARDKV_CERT", certs.ClientCert)
	t.Setenv("SHARDKV_KEY", certs.ClientKey)
	c := &cli{t: t, bin: bin, controllers: addr(0)}
	c.ok("admin", "join", "1="+addr(1), "--timeout", "30s")
	for i := range 8 {
		c.ok("put", fmt.Sprintf("key%d", i), fmt.Sprintf("value%d", i), "--timeout", "30s")
	}
	c.ok("admin", "join", "2="+addr(2), "--timeout", "30s") // half the shards are pulled by group 2
	waitSettled(t, c)
	for i := range 8 {
		if got := c.ok("get", fmt.Sprintf("key%d", i), "--timeout", "30s"); got != fmt.Sprintf("value%d\n", i) {
			t.Fatalf("key%d = %q", i, got)
		}
	}
}
