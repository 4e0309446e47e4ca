package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardkv/shardkv/client"
)

// newClient returns a client of the controllers at ctls (comma-separated
// host:port), closed when the test ends.
func newClient(t *testing.T, ctx context.Context, ctls string) *client.Client {
	t.Helper()
	cl, err := client.New(ctx, strings.Split(ctls, ","))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestDiskFull runs a group whose three replicas keep their data on one
// small tmpfs, fills it, and checks: writes fail with errors instead of
// being acknowledged, nothing acknowledged is lost, and once space is freed
// (and replicas that stopped on the disk error are restarted, as a
// supervisor would) the group serves again. Needs root for the mount.
func TestDiskFull(t *testing.T) {
	bin := binary(t)
	dir, mnt := smallDisk(t, "96m")

	base := freePorts(t, 9)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	ctls := strings.Join([]string{addr(0), addr(1), addr(2)}, ",")
	for id := 1; id <= 3; id++ {
		startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("c%d.log", id)), "controller", "--id", fmt.Sprint(id),
			"--listen", addr(id-1), "--peers", fmt.Sprintf("1=%s,2=%s,3=%s", addr(0), addr(1), addr(2)),
			"--data", filepath.Join(dir, fmt.Sprintf("c%d", id)))
	}
	serverArgs := func(id int) []string {
		return []string{"server", "--group", "1", "--id", fmt.Sprint(id), "--listen", addr(2 + id),
			"--peers", fmt.Sprintf("1=%s,2=%s,3=%s", addr(3), addr(4), addr(5)), "--controllers", ctls,
			"--data", filepath.Join(mnt, fmt.Sprintf("g1-%d", id)), "--http", addr(5 + id)}
	}
	servers := map[int]*process{}
	for id := 1; id <= 3; id++ {
		servers[id] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("g1-%d.log", id)), serverArgs(id)...)
	}
	c := &cli{t: t, bin: bin, controllers: ctls}
	for _, p := range servers { // the controller checks every replica of a join
		p.waitOutput(t, "replica serving")
	}
	c.ok("admin", "join", fmt.Sprintf("1=%s,%s,%s", addr(3), addr(4), addr(5)), "--timeout", "30s")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := newClient(t, ctx, ctls)

	// Leave about 6 MB free, then write 256 KB values until writes fail.
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, free-6<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	acked := map[string][]byte{}
	failures, noSpace := 0, 0
	value := bytes.Repeat([]byte("d"), 256<<10)
	for i := 0; i < 200 && failures < 5; i++ {
		key := fmt.Sprintf("fill-%d", i)
		// Bounded by this deadline: a group whose majority cannot persist
		// has no leader (its replicas exit, see below) until space is freed.
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		_, err := cl.Put(wctx, []byte(key), append([]byte(key), value...))
		wcancel()
		if err != nil {
			failures++
			t.Logf("write %d failed after %v: %v", i, time.Since(start).Round(time.Millisecond), err)
			if errors.Is(err, client.ErrNoSpace) {
				noSpace++
			}
			continue
		}
		acked[key] = append([]byte(key), value...)
	}
	if failures == 0 {
		t.Fatalf("wrote %d values of 256 KB into ~6 MB without an error", len(acked))
	}
	t.Logf("%d writes acknowledged before the disk filled, then %d failed (%d with ErrNoSpace)", len(acked), failures, noSpace)
	// No replica hangs silently: each one has exited with one clear line,
	// or is alive and says it is not ready.
	for id, p := range servers {
		if p.exited() {
			b := storageExit(t, fmt.Sprintf("replica %d", id), p)
			t.Logf("replica %d exited: %s", id, bytes.TrimSpace(tail(b, 300)))
			continue
		}
		resp, err := http.Get("http://" + addr(5+id) + "/readyz")
		if err != nil {
			t.Fatalf("replica %d: /readyz: %v", id, err)
		}
		resp.Body.Close()
		// Alive, it may not have written since the disk filled (with the
		// others gone it has no leader), but it must not claim readiness.
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("replica %d on a full disk says it is ready", id)
		}
	}

	// Free the space; restart replicas that stopped on the disk error.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for id, p := range servers {
		if p.exited() {
			storageExit(t, fmt.Sprintf("replica %d", id), p) // maybe after the check above
			p.kill()
			servers[id] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("g1-%d-restarted.log", id)), serverArgs(id)...)
			t.Logf("replica %d had stopped on the disk error; restarted", id)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := cl.Put(wctx, []byte("after"), []byte("space freed"))
		wcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			for id := range servers {
				logs, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("g1-%d*.log", id)))
				for _, l := range logs {
					b, _ := os.ReadFile(l)
					t.Logf("%s:\n%s", l, tail(b, 1500))
				}
			}
			t.Fatalf("no write succeeded within 60s of freeing space: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for k, want := range acked {
		got, err := cl.Get(ctx, []byte(k))
		v, found := got.Value, got.Found
		if err != nil || !found || !bytes.Equal(v, want) {
			t.Fatalf("acknowledged %s lost after the disk filled: found %v, %d bytes, %v", k, found, len(v), err)
		}
	}
}

// storageExit checks how p, a process that exited while its disk was
// full, ended: with the storage exit code (5) and a line that says the
// disk cannot persist, not with a Go panic or fatal error. It returns
// p's log.
func storageExit(t *testing.T, what string, p *process) []byte {
	t.Helper()
	b := p.exitedWith(t, what+" on a full disk", 5)
	if !bytes.Contains(b, []byte("no space left")) && !bytes.Contains(b, []byte("cannot persist")) && !bytes.Contains(b, []byte("synced write")) {
		t.Fatalf("%s exited without saying why:\n%s", what, tail(b, 2000))
	}
	return b
}

// crashHead returns up to n bytes of a process's log from the start of its
// crash (a Go panic or fatal error, whose first lines say why), or the
// log's tail when it holds no crash.
func crashHead(b []byte, n int) []byte {
	if loc := goCrash.FindIndex(b); loc != nil {
		b = b[loc[0]:]
		return b[:min(len(b), n)]
	}
	return tail(b, n)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// TestDevDiskFull is issue 10's repro: `shardkv dev` on a 40 MB tmpfs,
// 900 KB values until it fills. It used to block forever in Pebble's write
// stall with no log line while /readyz said ready. Now every write ends
// within its deadline, and the process either exits with one clear line or
// stays up saying it is not ready, having logged why. In one process: with
// dev's nodes in processes of their own, a node's storage exit code is
// dev's (TestDevTakesANodesStorageExit).
func TestDevDiskFull(t *testing.T) {
	bin := binary(t)
	dir, mnt := smallDisk(t, "40m")
	base := freePorts(t, 13)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", base+12)
	ctls := fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", base, base+1, base+2)
	dev := startProcess(t, bin, filepath.Join(dir, "dev.log"), "dev", "--processes", "1", "--data", filepath.Join(mnt, "data"),
		"--base-port", fmt.Sprint(base), "--http", httpAddr)
	dev.waitOutput(t, "try: shardkv put")
	ready := func() int {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(30 * time.Second)
	for ready() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("dev never became ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl := newClient(t, ctx, ctls)
	value := bytes.Repeat([]byte("v"), 900<<10)
	acked, failures := 0, 0
	for i := 0; i < 200 && failures < 3 && !dev.exited(); i++ {
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		start := time.Now()
		_, err := cl.Put(wctx, []byte(fmt.Sprint("big-", i)), value)
		wcancel()
		if err != nil {
			failures++
			t.Logf("write %d failed after %v: %v", i, time.Since(start).Round(time.Millisecond), err)
			continue
		}
		acked++
	}
	t.Logf("%d writes of 900 KB acknowledged, then %d failed", acked, failures)
	if failures == 0 && !dev.exited() {
		t.Fatalf("200 writes of 900 KB fitted in 40 MB")
	}
	b, _ := os.ReadFile(dev.log)
	if dev.exited() {
		storageExit(t, "dev", dev)
		t.Logf("dev exited: %s", bytes.TrimSpace(tail(b, 400)))
		return
	}
	if code := ready(); code == http.StatusOK {
		t.Fatalf("dev on a full disk says it is ready:\n%s", tail(b, 2000))
	}
	if !bytes.Contains(b, []byte("disk full")) && !bytes.Contains(b, []byte("write stall")) && !bytes.Contains(b, []byte("no space")) {
		t.Fatalf("dev on a full disk logged nothing about it:\n%s", tail(b, 2000))
	}
}

// smallDisk makes a temporary directory (for logs) and mounts a tmpfs of
// size in it (for data; root only, skips otherwise), unmounted when the
// test ends.
func smallDisk(t *testing.T, size string) (dir, mnt string) {
	t.Helper()
	dir = t.TempDir()
	mnt = filepath.Join(dir, "small-disk")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	return dir, mnt
}
