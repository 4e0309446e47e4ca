package main_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardkv/shardkv/client"
)

// TestDiskFull runs a group whose three replicas keep their data on one
// small tmpfs, fills it, and checks: writes fail with errors instead of
// being acknowledged, nothing acknowledged is lost, and once space is freed
// (and replicas that stopped on the disk error are restarted, as a
// supervisor would) the group serves again. Needs root for the mount.
func TestDiskFull(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "small-disk")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s)", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })

	base := freePorts(t, 6)
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
			"--data", filepath.Join(mnt, fmt.Sprintf("g1-%d", id))}
	}
	servers := map[int]*process{}
	for id := 1; id <= 3; id++ {
		servers[id] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("g1-%d.log", id)), serverArgs(id)...)
	}
	c := &cli{t: t, bin: bin, controllers: ctls}
	c.ok("admin", "join", fmt.Sprintf("1=%s,%s,%s", addr(3), addr(4), addr(5)), "--timeout", "30s")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := client.New(ctx, strings.Split(ctls, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

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
	failures := 0
	value := bytes.Repeat([]byte("d"), 256<<10)
	for i := 0; i < 200 && failures < 5; i++ {
		key := fmt.Sprintf("fill-%d", i)
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
		err := cl.Put(wctx, []byte(key), append([]byte(key), value...))
		wcancel()
		if err != nil {
			failures++
			continue
		}
		acked[key] = append([]byte(key), value...)
	}
	if failures == 0 {
		t.Fatalf("wrote %d values of 256 KB into ~6 MB without an error", len(acked))
	}
	t.Logf("%d writes acknowledged before the disk filled, then %d failed", len(acked), failures)

	// Free the space; restart replicas that stopped on the disk error.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for id, p := range servers {
		if p.exited() {
			p.kill()
			servers[id] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("g1-%d-restarted.log", id)), serverArgs(id)...)
			t.Logf("replica %d had stopped on the disk error; restarted", id)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
		err := cl.Put(wctx, []byte("after"), []byte("space freed"))
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
		v, found, err := cl.Get(ctx, []byte(k))
		if err != nil || !found || !bytes.Equal(v, want) {
			t.Fatalf("acknowledged %s lost after the disk filled: found %v, %d bytes, %v", k, found, len(v), err)
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
