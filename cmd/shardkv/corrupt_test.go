package main_test

import (
	be "encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"

	"github.com/shardkv/shardkv/api/kvpb"
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
	it, err := e.DB().NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: kvpb.PrefixEnd(prefix)})
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
	args, procs, c := startControllers(t, bin, dir, 5)
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
	refused(t, bin, filepath.Join(dir, "c1-corrupt.log"), []string{"corrupted", filepath.Join(dir, "c1"), fmt.Sprint("entry ", last/2+1)}, args(1)...)
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
	args, procs, c := startControllers(t, bin, dir, 60)
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
	refused(t, bin, filepath.Join(dir, "c2-corrupt.log"), []string{"write-ahead log is corrupted", filepath.Join(dir, "c2")}, args(2)...)
	if out := c.ok("admin", "config", "--timeout", "30s"); !strings.Contains(out, "configuration 60") {
		t.Fatalf("the others: %s", out)
	}
}

// startControllers starts three controller replicas with data under dir
// and joins groups 1 to groups (at addresses where nothing runs), making
// configurations 1 to groups; args gives the command line of replica id,
// to restart it.
func startControllers(t *testing.T, bin, dir string, groups int) (args func(id int) []string, procs map[int]*process, c *cli) {
	t.Helper()
	t.Setenv("SHARDKV_UNSAFE_SKIP_JOIN_CHECK", "1") // the tests join groups that do not run
	base := freePorts(t, 3)
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", base+i) }
	args = func(id int) []string {
		return []string{"controller", "--id", fmt.Sprint(id), "--listen", addr(id - 1),
			"--peers", fmt.Sprintf("1=%s,2=%s,3=%s", addr(0), addr(1), addr(2)), "--data", filepath.Join(dir, fmt.Sprintf("c%d", id))}
	}
	procs = map[int]*process{}
	for id := 1; id <= 3; id++ {
		procs[id] = startProcess(t, bin, filepath.Join(dir, fmt.Sprintf("c%d.log", id)), args(id)...)
	}
	c = &cli{t: t, bin: bin, controllers: strings.Join([]string{addr(0), addr(1), addr(2)}, ",")}
	for g := 1; g <= groups; g++ {
		c.ok("admin", "join", fmt.Sprintf("%d=10.0.0.%d:1", g, g), "--timeout", "30s")
	}
	return args, procs, c
}
