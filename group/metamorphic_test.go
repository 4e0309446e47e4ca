package group

import (
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// The metamorphic test, after Pebble's: one random command log, generated
// from a printed seed, is applied to state machines that differ only in
// how it reaches them (one entry per Apply, fixed or random batch sizes,
// the whole log in large batches, snapshots restored into fresh storage,
// engines closed and reopened, entries delivered again after they were
// applied, a neighbour replica sharing the engine). Every one must end, and
// pass every checkpoint, with the same digest of its whole persisted state
// and the same outcome for every entry.
//
//	go test ./group -run TestMetamorphic -metamorphic.seed=N   # replay one log
//	SHARDKV_METAMORPHIC=long go test ./group -run TestMetamorphic  # many longer logs
var (
	metaSeed = flag.Uint64("metamorphic.seed", 0, "the seed of the randomised tests (TestMetamorphic, TestWriteBatchesApplyAsSingleWrites, TestListPagesMatchAModel; 0: random seeds, printed)")
	metaOps  = flag.Int("metamorphic.ops", 0, "TestMetamorphic: commands per log (default 1500; 10000 with SHARDKV_METAMORPHIC=long)")
	metaRuns = flag.Int("metamorphic.runs", 0, "TestMetamorphic: logs to check (default 2; 25 with SHARDKV_METAMORPHIC=long)")
)

// The limits of every state machine of the test: small, so that appends
// fail on size and sessions expire within a log.
var metaLimits = Limits{MaxValueSize: 64, SessionTTL: 20 * time.Second}

const (
	metaGroup      = 1
	metaCheckpoint = 200 // entries between digest comparisons
)

func TestMetamorphic(t *testing.T) {
	ops, runs := 1500, 2
	if os.Getenv("SHARDKV_METAMORPHIC") == "long" {
		ops, runs = 10000, 25
	}
	if *metaOps > 0 {
		ops = *metaOps
	}
	if *metaRuns > 0 {
		runs = *metaRuns
	}
	seeds := []uint64{*metaSeed}
	if *metaSeed == 0 {
		seeds = seeds[:0]
		for range runs {
			seeds = append(seeds, rand.Uint64()>>1|1)
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Logf("replay: go test ./group -run TestMetamorphic -metamorphic.seed=%d -metamorphic.ops=%d", seed, ops)
			runMetamorphic(t, seed, ops)
		})
	}
}

func runMetamorphic(t *testing.T, seed uint64, ops int) {
	log, stats := generateLog(t, seed, ops)
	t.Logf("%d entries: %s", len(log), stats)
	var ref *metaRun
	for _, v := range metaVariants {
		got := v.run(t, log, rand.New(rand.NewPCG(seed, fnvString(v.name))))
		if ref == nil {
			ref = got
			t.Logf("outcomes: %s", outcomeStats(ref.outcomes))
			continue
		}
		compareRuns(t, ref, got)
	}
}

// outcomeStats counts outcomes by their first words, to show what a log
// exercised.
func outcomeStats(outcomes map[uint64]string) string {
	n := map[string]int{}
	for _, o := range outcomes {
		class, _, _ := strings.Cut(strings.TrimPrefix(o, "group: "), ":")
		n[class]++
	}
	var out []string
	for class, k := range n {
		out = append(out, fmt.Sprintf("%d %s", k, class))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// metaRun is what one variant observed: the outcome of every entry it
// applied, and the state at every checkpoint.
type metaRun struct {
	name     string
	outcomes map[uint64]string
	states   []checkpointState
}

type checkpointState struct {
	index  uint64
	digest uint64
	lines  []string // the state the digest is over, for the failure message
}

func compareRuns(t *testing.T, ref, got *metaRun) {
	t.Helper()
	for i := range ref.states {
		r, g := ref.states[i], got.states[i]
		if r.index != g.index {
			t.Fatalf("%s stopped at index %d, %s at %d", ref.name, r.index, got.name, g.index)
		}
		if r.digest != g.digest {
			t.Fatalf("after index %d, %s and %s differ (digest %x vs %x); first difference:\n%s",
				r.index, ref.name, got.name, r.digest, g.digest, firstDifference(r.lines, g.lines))
		}
	}
	for idx, want := range ref.outcomes {
		if have, ok := got.outcomes[idx]; !ok || have != want {
			t.Fatalf("entry %d: %s answered %q, %s answered %q (applied: %v)", idx, ref.name, want, got.name, have, ok)
		}
	}
	if len(got.outcomes) != len(ref.outcomes) {
		t.Fatalf("%s applied %d entries, %s %d", ref.name, len(ref.outcomes), got.name, len(got.outcomes))
	}
}

func firstDifference(a, b []string) string {
	for i := 0; i < max(len(a), len(b)); i++ {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return fmt.Sprintf("  - %s\n  + %s", x, y)
		}
	}
	return "  (none)"
}

func fnvString(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

// ---- The log ----

// logGen writes a command log the way a group's leader would receive it,
// consulting a reference state machine (applied one entry at a time) for
// what is plausible next: writes of every kind within and outside
// sessions, retries and stale requests, session openings, configuration
// changes moving shards between three groups (and sometimes to none),
// shard chunks for shards being pulled (restarted, out of order, with
// keys of other shards), deletions and confirmations, leader stamps that
// jump ahead and go back, and undecodable or empty entries.
type logGen struct {
	t      *testing.T
	rng    *rand.Rand
	ref    *StateMachine
	ents   []raftnode.Entry
	term   uint64
	stamp  int64
	seq    map[uint64]uint64 // last sequence number used per client
	keys   [nShards][]string // the key pool of each shard
	opened [nShards][]uint64 // clients that opened a session, by shard
	kinds  map[string]int    // commands generated, by kind
}

func generateLog(t *testing.T, seed uint64, n int) ([]raftnode.Entry, string) {
	g := &logGen{t: t, rng: rand.New(rand.NewPCG(seed, 0x6d657461)), term: 1, stamp: 1_700_000_000_000,
		seq: map[uint64]uint64{}, kinds: map[string]int{}}
	g.ref = openSM(t, t.TempDir(), storage.Replica{Group: metaGroup, ID: 1})
	for s := range g.keys {
		for i := range 4 {
			g.keys[s] = append(g.keys[s], keyIn(s, i))
		}
	}
	g.emit("config", g.nextConfig(1)) // most logs start with a configuration
	for len(g.ents) < n {
		g.step()
	}
	var kinds []string
	for _, k := range []string{"write", "open", "config", "insert", "delete", "confirm", "noise"} {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, g.kinds[k]))
	}
	return g.ents, strings.Join(kinds, ", ") + fmt.Sprintf("; final configuration %d", g.ref.View().Config.Num)
}

func (g *logGen) step() {
	r := g.rng
	// The leader's stamp: mostly forward by up to 200 ms, sometimes a
	// clock step back, sometimes a jump past the session TTL.
	switch x := r.IntN(100); {
	case x < 2:
		g.stamp -= r.Int64N(5000)
	case x < 3 && r.IntN(3) == 0:
		g.stamp += metaLimits.SessionTTL.Milliseconds() + r.Int64N(1000)
	default:
		g.stamp += r.Int64N(200)
	}
	if r.IntN(300) == 0 {
		g.term++
	}
	v := g.ref.View()
	switch x := r.IntN(100); {
	case x < 50:
		g.emit("write", g.write())
	case x < 62:
		g.emit("open", g.open())
	case x < 67:
		num := v.Config.Num + 1
		if r.IntN(5) == 0 {
			num = v.Config.Num + uint64(r.IntN(3)) - 1 // stale or skipping: refused
		}
		g.emit("config", g.nextConfig(num))
	case x < 95:
		if !g.migrationStep(v) {
			g.emit("write", g.write())
		}
	default:
		g.noise()
	}
}

func (g *logGen) emit(kind string, cmd *grouppb.Command) {
	cmd.Stamp = g.stamp
	data, err := proto.Marshal(cmd)
	if err != nil {
		g.t.Fatal(err)
	}
	g.kinds[kind]++
	g.emitData(data)
}

func (g *logGen) emitData(data []byte) {
	e := raftnode.Entry{Index: uint64(len(g.ents)) + 1, Term: g.term, Data: data}
	g.ents = append(g.ents, e)
	if _, err := g.ref.Apply([]raftnode.Entry{e}); err != nil {
		g.t.Fatalf("reference state machine, entry %d: %v", e.Index, err)
	}
}

// key picks a key, mostly of a shard the group serves.
func (g *logGen) key() (int, string) {
	s := g.rng.IntN(nShards)
	if g.rng.IntN(4) != 0 {
		var serving []int
		for shard, m := range g.ref.meta.shards {
			if m.state.servable() {
				serving = append(serving, shard)
			}
		}
		if len(serving) > 0 {
			s = serving[g.rng.IntN(len(serving))]
		}
	}
	return s, g.keys[s][g.rng.IntN(len(g.keys[s]))]
}

func (g *logGen) write() *grouppb.Command {
	r := g.rng
	shard, key := g.key()
	op := []kvpb.WriteOp{kvpb.WriteOp_WRITE_OP_PUT, kvpb.WriteOp_WRITE_OP_PUT, kvpb.WriteOp_WRITE_OP_APPEND,
		kvpb.WriteOp_WRITE_OP_APPEND, kvpb.WriteOp_WRITE_OP_DELETE}[r.IntN(5)]
	value := fmt.Sprintf("<%d>", len(g.ents))
	if r.IntN(6) == 0 {
		value = strings.Repeat("x", 20+r.IntN(50)) // near or past MaxValueSize
	}
	client := uint64(r.IntN(5)) // 0: no session
	if opened := g.opened[shard]; len(opened) > 0 && r.IntN(5) != 0 {
		client = opened[r.IntN(len(opened))] // mostly clients that opened a session here
	}
	var seq uint64
	if client != 0 {
		switch x := r.IntN(20); {
		case x == 0 && g.seq[client] > 0: // a retry of the last request
			seq = g.seq[client]
		case x == 1 && g.seq[client] > 1: // an older request
			seq = g.seq[client] - 1 - uint64(r.IntN(int(g.seq[client]-1)))
		default:
			g.seq[client]++
			seq = g.seq[client]
		}
	}
	return write(op, key, value, client, seq)
}

func (g *logGen) open() *grouppb.Command {
	shard, key := g.key()
	client := uint64(1 + g.rng.IntN(4))
	var seq uint64
	if g.rng.IntN(30) == 0 {
		seq = 1 // malformed: an opening carries sequence 0
	}
	if !slices.Contains(g.opened[shard], client) {
		g.opened[shard] = append(g.opened[shard], client)
	}
	return write(kvpb.WriteOp_WRITE_OP_OPEN_SESSION, key, "", client, seq)
}

// nextConfig returns configuration num: the current owners with one to
// three shards moved among groups 1, 2 and 3, or rarely to no group.
func (g *logGen) nextConfig(num uint64) *grouppb.Command {
	r := g.rng
	owners := g.ref.View().Config.Shards
	if len(owners) == 0 {
		owners = make([]uint64, nShards)
		for s := range owners {
			owners[s] = []uint64{1, 1, 1, 2, 3}[r.IntN(5)]
		}
	} else {
		owners = append([]uint64(nil), owners...)
		for range 1 + r.IntN(3) {
			owner := []uint64{1, 1, 1, 2, 3, 0}[r.IntN(6)]
			if owner == 0 && r.IntN(4) != 0 {
				owner = 1
			}
			owners[r.IntN(nShards)] = owner
		}
	}
	return config(num, owners...)
}

// migrationStep emits the next step of a migration in progress (or a
// plausible mistake), if one is in progress.
func (g *logGen) migrationStep(v View) bool {
	r := g.rng
	var moving []int
	for s, sv := range v.Shards {
		if sv.State == Pulling || sv.State == Offering || sv.State == Confirming {
			moving = append(moving, s)
		}
	}
	if len(moving) == 0 {
		return false
	}
	s := moving[r.IntN(len(moving))]
	num := v.Config.Num
	switch v.Shards[s].State {
	case Pulling:
		chunk := g.ref.meta.shards[s].nextChunk
		switch x := r.IntN(20); {
		case x == 0:
			chunk = 0 // the pull restarts after a leader change
		case x == 1:
			chunk += 1 + uint64(r.IntN(2)) // out of order: refused
		}
		in := &grouppb.InsertShard{ConfigNum: num, Shard: uint32(s), Chunk: chunk, Last: chunk >= 2 && r.IntN(2) == 0}
		if r.IntN(25) == 0 {
			in.ConfigNum = num - 1 // for an older configuration: refused
		}
		for range r.IntN(4) {
			key := g.keys[s][r.IntN(len(g.keys[s]))]
			if r.IntN(10) == 0 {
				_, key = g.key() // maybe of another shard: malformed
			}
			in.Kvs = append(in.Kvs, &grouppb.KeyValue{Key: []byte(key), Value: []byte(fmt.Sprintf("pulled<%d>", len(g.ents)))})
		}
		if in.Last || r.IntN(4) == 0 {
			for range r.IntN(3) {
				in.Sessions = append(in.Sessions, &grouppb.SessionRecord{ClientId: uint64(1 + r.IntN(4)),
					Seq: uint64(r.IntN(int(g.seq[1]) + 3)), LastSeen: g.stamp - r.Int64N(100000)})
			}
		}
		g.emit("insert", &grouppb.Command{Op: &grouppb.Command_Insert{Insert: in}})
	case Offering:
		req := &grouppb.DeleteShardRequest{ConfigNum: num, Shard: uint32(s)}
		if r.IntN(10) == 0 {
			req.ConfigNum = num + 1 // the new owner is ahead: not ready
		}
		g.emit("delete", &grouppb.Command{Op: &grouppb.Command_DeleteShard{DeleteShard: req}})
	case Confirming:
		g.emit("confirm", &grouppb.Command{Op: &grouppb.Command_ConfirmDelete{ConfirmDelete: &grouppb.ConfirmDelete{ConfigNum: num, Shard: uint32(s)}}})
	}
	return true
}

func (g *logGen) noise() {
	r := g.rng
	g.kinds["noise"]++
	switch r.IntN(4) {
	case 0: // a leader's empty entry
		g.emitData(nil)
	case 1: // undecodable
		junk := make([]byte, 1+r.IntN(8))
		for i := range junk {
			junk[i] = byte(r.Uint32())
		}
		g.emitData(junk)
	case 2:
		g.kinds["noise"]--
		g.emit("noise", &grouppb.Command{})
	default:
		g.kinds["noise"]--
		g.emit("noise", write(kvpb.WriteOp(99), "k", "v", 1, 1))
	}
}

// ---- The ways to apply it ----

type metaVariant struct {
	name string
	// apply brings m from log[lo-1] to log[hi-1] applied (lo, hi are
	// positions in the log), in the variant's own way.
	apply func(m *metaMachine, lo, hi int, rng *rand.Rand)
	// neighbour, if set, shares the engine with a second replica of the
	// group that applies the same log one entry at a time and is checked
	// too.
	neighbour bool
}

var metaVariants = []metaVariant{
	{name: "one-by-one", apply: func(m *metaMachine, lo, hi int, _ *rand.Rand) {
		for i := lo; i < hi; i++ {
			m.apply(i, i+1)
		}
	}},
	{name: "batches-of-7", apply: func(m *metaMachine, lo, hi int, _ *rand.Rand) {
		for i := lo; i < hi; i += 7 {
			m.apply(i, min(i+7, hi))
		}
	}},
	{name: "random-batches", apply: func(m *metaMachine, lo, hi int, rng *rand.Rand) {
		randomBatches(lo, hi, rng, m.apply)
	}},
	{name: "whole-segments", apply: func(m *metaMachine, lo, hi int, _ *rand.Rand) {
		m.apply(lo, hi)
	}},
	{name: "snapshot-restores", apply: func(m *metaMachine, lo, hi int, rng *rand.Rand) {
		randomBatches(lo, hi, rng, func(i, j int) {
			m.apply(i, j)
			if rng.IntN(8) == 0 {
				m.snapshotRestore()
			}
		})
	}},
	{name: "reopens", apply: func(m *metaMachine, lo, hi int, rng *rand.Rand) {
		randomBatches(lo, hi, rng, func(i, j int) {
			m.apply(i, j)
			if rng.IntN(8) == 0 {
				m.reopen()
			}
		})
	}},
	{name: "redeliveries", apply: func(m *metaMachine, lo, hi int, rng *rand.Rand) {
		// Every batch starts up to 10 entries early: those are already
		// applied and must be skipped.
		randomBatches(lo, hi, rng, func(i, j int) {
			m.apply(max(0, i-rng.IntN(11)), j)
		})
	}},
	{name: "mixed", apply: func(m *metaMachine, lo, hi int, rng *rand.Rand) {
		// Snapshots taken ahead of what raft then redelivers (the image a
		// leader sends may be newer than its snapshot metadata), reopens
		// and redeliveries, interleaved.
		randomBatches(lo, hi, rng, func(i, j int) {
			switch rng.IntN(10) {
			case 0:
				m.snapshotRestore()
			case 1:
				m.reopen()
			}
			m.apply(max(0, i-rng.IntN(4)), j)
		})
	}},
	{name: "shared-engine", neighbour: true, apply: func(m *metaMachine, lo, hi int, rng *rand.Rand) {
		randomBatches(lo, hi, rng, func(i, j int) {
			m.apply(i, j)
			for k := i; k < j; k++ {
				m.applyNeighbour(k, k+1)
			}
			if rng.IntN(10) == 0 {
				// The neighbour is replaced by an image of this replica:
				// its restore must not touch this replica's keys.
				m.restoreNeighbourFromMain()
			}
		})
	}},
}

func randomBatches(lo, hi int, rng *rand.Rand, fn func(i, j int)) {
	for i := lo; i < hi; {
		j := min(hi, i+1+rng.IntN(40))
		fn(i, j)
		i = j
	}
}

func (v metaVariant) run(t *testing.T, log []raftnode.Entry, rng *rand.Rand) *metaRun {
	t.Helper()
	m := &metaMachine{t: t, variant: v.name, log: log, replica: storage.Replica{Group: metaGroup, ID: 1},
		run: &metaRun{name: v.name, outcomes: map[uint64]string{}}}
	m.dir = filepath.Join(t.TempDir(), "0")
	m.open()
	if v.neighbour {
		m.neighbour = openSMOn(t, m.engine, storage.Replica{Group: metaGroup, ID: 2})
	}
	defer func() { _ = m.engine.Close() }()
	for lo := 0; lo < len(log); lo += metaCheckpoint {
		hi := min(lo+metaCheckpoint, len(log))
		v.apply(m, lo, hi, rng)
		if got, want := m.sm.Applied(), log[hi-1].Index; got != want {
			t.Fatalf("%s: applied %d, want %d", v.name, got, want)
		}
		st := m.checkpoint(m.sm)
		if m.neighbour != nil {
			if nb := m.checkpoint(m.neighbour); nb.digest != st.digest {
				t.Fatalf("%s: after index %d the neighbour replica differs:\n%s", v.name, st.index, firstDifference(st.lines, nb.lines))
			}
		}
		m.run.states = append(m.run.states, st)
	}
	return m.run
}

// metaMachine is one variant's state machine and its storage.
type metaMachine struct {
	t         *testing.T
	variant   string
	log       []raftnode.Entry
	replica   storage.Replica
	dir       string
	engine    *storage.Engine
	sm        *StateMachine
	neighbour *StateMachine
	dirs      int
	run       *metaRun
}

func openSM(t *testing.T, dir string, r storage.Replica) *StateMachine {
	t.Helper()
	e, err := storage.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return openSMOn(t, e, r)
}

func openSMOn(t *testing.T, e *storage.Engine, r storage.Replica) *StateMachine {
	t.Helper()
	sm, err := Open(e, r, metaLimits)
	if err != nil {
		t.Fatal(err)
	}
	return sm
}

func (m *metaMachine) open() {
	e, err := storage.Open(m.dir)
	if err != nil {
		m.t.Fatal(err)
	}
	m.engine = e
	m.sm = openSMOn(m.t, e, m.replica)
}

// apply hands log[i:j] to the state machine in one Apply call and records
// the outcome of every entry it had not applied before.
func (m *metaMachine) apply(i, j int) {
	m.t.Helper()
	before := m.sm.Applied()
	res, err := m.sm.Apply(m.log[i:j])
	if err != nil {
		m.t.Fatalf("%s: apply entries %d..%d: %v", m.variant, m.log[i].Index, m.log[j-1].Index, err)
	}
	for k, e := range m.log[i:j] {
		if e.Index <= before {
			if res[k] != nil {
				m.t.Fatalf("%s: entry %d, already applied, answered %v", m.variant, e.Index, res[k])
			}
			continue
		}
		if _, dup := m.run.outcomes[e.Index]; dup {
			m.t.Fatalf("%s: entry %d applied twice", m.variant, e.Index)
		}
		m.run.outcomes[e.Index] = fmt.Sprint(res[k])
	}
}

func (m *metaMachine) applyNeighbour(i, j int) {
	if _, err := m.neighbour.Apply(m.log[i:j]); err != nil {
		m.t.Fatalf("%s: neighbour: %v", m.variant, err)
	}
}

// snapshotRestore replaces the state machine with a fresh one, on fresh
// storage, restored from its image: what a follower does when its leader
// sends a snapshot.
func (m *metaMachine) snapshotRestore() {
	m.t.Helper()
	img, err := m.sm.Snapshot()
	if err != nil {
		m.t.Fatal(err)
	}
	if err := m.engine.Close(); err != nil {
		m.t.Fatal(err)
	}
	m.dirs++
	m.dir = filepath.Join(filepath.Dir(m.dir), fmt.Sprint(m.dirs))
	m.open()
	if err := m.sm.Restore(img); err != nil {
		m.t.Fatalf("%s: restore: %v", m.variant, err)
	}
}

// reopen closes the engine and opens the state machine again from disk.
func (m *metaMachine) reopen() {
	m.t.Helper()
	if err := m.engine.Close(); err != nil {
		m.t.Fatal(err)
	}
	m.open()
}

func (m *metaMachine) restoreNeighbourFromMain() {
	img, err := m.sm.Snapshot()
	if err != nil {
		m.t.Fatal(err)
	}
	if err := m.neighbour.Restore(img); err != nil {
		m.t.Fatalf("%s: restore neighbour: %v", m.variant, err)
	}
}

// checkpoint describes sm's whole persisted state, one line per key in
// key order without the replica's own prefix (protobuf values decoded and
// re-encoded deterministically), after checking that the state it keeps in
// memory is the state on disk; the digest is FNV-1a over the lines.
func (m *metaMachine) checkpoint(sm *StateMachine) checkpointState {
	t := m.t
	t.Helper()
	lo, hi := sm.r.StateSpan()
	var lines []string
	var disk struct {
		applied, now uint64
		meta         string
	}
	det := proto.MarshalOptions{Deterministic: true}
	if err := storage.Scan(sm.db, lo, hi, func(k, v []byte) error {
		suffix := k[len(lo):]
		var line string
		switch suffix[0] {
		case storage.SuffixApplied:
			disk.applied = binary.BigEndian.Uint64(v)
			line = fmt.Sprintf("applied %d", disk.applied)
		case storage.SuffixNow:
			disk.now = binary.BigEndian.Uint64(v)
			line = fmt.Sprintf("now %d", disk.now)
		case keyMeta:
			var pm grouppb.Meta
			if err := proto.Unmarshal(v, &pm); err != nil {
				return err
			}
			b, err := det.Marshal(&pm)
			if err != nil {
				return err
			}
			disk.meta = hex.EncodeToString(b)
			line = "meta " + disk.meta
		case keyData:
			line = fmt.Sprintf("data shard %d %q = %q", binary.BigEndian.Uint32(suffix[1:5]), suffix[5:], v)
		case keySession:
			var rec grouppb.SessionRecord
			if err := proto.Unmarshal(v, &rec); err != nil {
				return err
			}
			line = fmt.Sprintf("session shard %d client %d: seq %d last seen %d error %d",
				binary.BigEndian.Uint32(suffix[1:5]), rec.GetClientId(), rec.GetSeq(), rec.GetLastSeen(), rec.GetErrorCode())
			if got := binary.BigEndian.Uint64(suffix[5:]); got != rec.GetClientId() {
				return fmt.Errorf("session of client %d under the key of client %d", rec.GetClientId(), got)
			}
		default:
			line = fmt.Sprintf("unknown key %x = %x", suffix, v)
		}
		lines = append(lines, line)
		return nil
	}); err != nil {
		t.Fatalf("%s: scan state: %v", m.variant, err)
	}

	sm.mu.RLock()
	mem, err := det.Marshal(sm.meta.toProto())
	applied, now := sm.applied, sm.now
	sm.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	var emptyMeta meta
	empty, _ := det.Marshal(emptyMeta.toProto())
	if disk.meta == "" {
		disk.meta = hex.EncodeToString(empty)
	}
	if applied != disk.applied || uint64(now) != disk.now || hex.EncodeToString(mem) != disk.meta {
		t.Fatalf("%s: in memory (applied %d, now %d, meta %x) is not on disk (applied %d, now %d, meta %s)",
			m.variant, applied, now, mem, disk.applied, disk.now, disk.meta)
	}
	_, digests, err := sm.Digests()
	if err != nil {
		t.Fatal(err)
	}
	lines = append(lines, fmt.Sprintf("view %+v", sm.View()), fmt.Sprintf("shard digests %x", digests))

	h := fnv.New64a()
	for _, l := range lines {
		_, _ = h.Write([]byte(l))
		_, _ = h.Write([]byte{'\n'})
	}
	return checkpointState{index: applied, digest: h.Sum64(), lines: lines}
}
