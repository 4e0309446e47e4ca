package main_test

import (
	be "encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/storage"
)

// lastLogIndex opens a stopped replica's engine and returns the last raft
// log index of member id of group gid (by the documented key layout) and a
// function that overwrites one record and closes the engine.
func lastLogIndex(t *testing.T, dir string, gid, id uint64) (uint64, func(index uint64, value []byte)) {
	t.Helper()
	e, err := storage.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	prefix := be.BigEndian.AppendUint64(be.BigEndian.AppendUint64([]byte{'r'}, gid), id)
	prefix = append(prefix, 'l')
	it, err := e.DB().NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: storage.PrefixEnd(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	if it.Last() {
		last = be.BigEndian.Uint64(it.Key()[len(prefix):])
	}
	it.Close()
	return last, func(index uint64, value []byte) {
		defer e.Close()
		if err := e.DB().Set(be.BigEndian.AppendUint64(append([]byte(nil), prefix...), index), value, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCorruptDataDirectory starts a controller replica on a data directory
// with a torn log tail (it repairs it and serves) and then with a corrupted
// entry in the middle of its log (it refuses to start, naming the
// directory and the index).
func TestCorruptDataDirectory(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	base := freePorts(t, 3)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	ctls := strings.Join([]string{addr(0), addr(1), addr(2)}, ",")
	args := func(id int) []string {
		return []string{"controller", "--id", fmt.Sprint(id), "--listen", addr(id - 1),
			"--peers", fmt.Sprintf("1=%s,2=%s,3=%s", addr(0), addr(1), addr(2)), "--data", filepath.Join(dir, fmt.Sprintf("c%d", id))}
	}
	procs := map[int]*process{}
	for id := 1; id <= 3; id++ {
		procs[id] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("c%d.log", id)), args(id)...)
	}
	c := &cli{t: t, bin: bin, controllers: ctls}
	for g := 1; g <= 5; g++ {
		c.ok("admin", "join", fmt.Sprintf("%d=10.0.0.%d:1", g, g), "--timeout", "30s")
	}
	procs[1].stop(t)

	// A torn tail: a damaged record just past the end of the log.
	last, set := lastLogIndex(t, filepath.Join(dir, "c1"), 0, 1)
	if last < 4 {
		t.Fatalf("log too short: last index %d", last)
	}
	set(last+1, []byte{1, 2, 3, 4, 5, 6, 7})
	procs[1] = startProcess(t, bin, filepath.Join(dir, "c1-torn.log"), args(1)...)
	procs[1].waitOutput(t, "replica serving")
	procs[1].waitOutput(t, "repaired torn raft log tail")
	if out := c.ok("admin", "config", "--timeout", "30s"); !strings.Contains(out, "configuration 5") {
		t.Fatalf("after repair: %s", out)
	}
	procs[1].stop(t)

	// A corrupted committed entry in the middle: refuse to start.
	_, set = lastLogIndex(t, filepath.Join(dir, "c1"), 0, 1)
	set(last/2+1, []byte("not a raft entry"))
	p := startProcess(t, bin, filepath.Join(dir, "c1-corrupt.log"), args(1)...)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("a replica with a corrupted log kept running")
	}
	if p.err == nil {
		t.Fatal("a replica with a corrupted log exited 0")
	}
	b, _ := os.ReadFile(p.log)
	msg := string(b)
	if !strings.Contains(msg, "corrupted") || !strings.Contains(msg, filepath.Join(dir, "c1")) || !strings.Contains(msg, fmt.Sprint("entry ", last/2+1)) {
		t.Fatalf("unclear error: %s", msg)
	}
	t.Logf("refused with: %s", strings.TrimSpace(msg))
	// The other two keep serving.
	c.ok("admin", "config", "--timeout", "30s")
}

// TestCorruptedWALRefusesToStart is issue 10's repro through a real
// process: a controller replica whose newest write-ahead log has 16 bytes
// overwritten in its middle (not at its end) must refuse to start, naming
// its data directory, instead of starting without the writes after the
// damage. The other replicas keep serving.
func TestCorruptedWALRefusesToStart(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	base := freePorts(t, 3)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	ctls := strings.Join([]string{addr(0), addr(1), addr(2)}, ",")
	args := func(id int) []string {
		return []string{"controller", "--id", fmt.Sprint(id), "--listen", addr(id - 1),
			"--peers", fmt.Sprintf("1=%s,2=%s,3=%s", addr(0), addr(1), addr(2)), "--data", filepath.Join(dir, fmt.Sprintf("c%d", id))}
	}
	procs := map[int]*process{}
	for id := 1; id <= 3; id++ {
		procs[id] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("c%d.log", id)), args(id)...)
	}
	c := &cli{t: t, bin: bin, controllers: ctls}
	for g := 1; g <= 60; g++ {
		c.ok("admin", "join", fmt.Sprintf("%d=10.0.0.%d:1", g, g), "--timeout", "30s")
	}
	procs[2].stop(t)
	logs, err := filepath.Glob(filepath.Join(dir, "c2", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no WAL: %v", err)
	}
	slices.Sort(logs)
	wal := logs[len(logs)-1]
	st, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(wal, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("0123456789abcdef"), st.Size()/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := startProcess(t, bin, filepath.Join(dir, "c2-corrupt.log"), args(2)...)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("a replica with a corrupted WAL kept running")
	}
	if p.err == nil {
		t.Fatal("a replica with a corrupted WAL exited 0")
	}
	b, _ := os.ReadFile(p.log)
	msg := string(b)
	if !strings.Contains(msg, "write-ahead log is corrupted") || !strings.Contains(msg, filepath.Join(dir, "c2")) {
		t.Fatalf("unclear error: %s", msg)
	}
	t.Logf("refused with: %s", strings.TrimSpace(msg))
	if out := c.ok("admin", "config", "--timeout", "30s"); !strings.Contains(out, "configuration 60") {
		t.Fatalf("the others: %s", out)
	}
}
