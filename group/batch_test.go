package group

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/raftnode"
	"github.com/shardkv/shardkv/storage"
)

// TestWriteBatchesApplyAsSingleWrites checks the promise of
// grouppb.Command_Writes: a batch of writes applies exactly as the same
// writes in consecutive entries with the batch's stamp. The metamorphic
// test's random log (printed seed; -metamorphic.seed replays it) is
// rewritten twice: runs of consecutive writes cut into random batches, once
// as one entry per batch and once as one entry per write. Every write must
// get the same outcome in both, and the two state machines must end with
// the same persisted state (but for the applied index, as the logs differ
// in length).
func TestWriteBatchesApplyAsSingleWrites(t *testing.T) {
	seed := *metaSeed
	if seed == 0 {
		seed = rand.Uint64()>>1 | 1
	}
	t.Logf("replay: go test ./group -run TestWriteBatchesApplyAsSingleWrites -metamorphic.seed=%d", seed)
	log, stats := generateLog(t, seed, 1500)
	t.Logf("%d entries: %s", len(log), stats)
	singles, batched := rebatch(t, log, rand.New(rand.NewPCG(seed, 0x6261)))

	var states [2][]string
	var outcomes [2][]string
	for i, l := range [][]raftnode.Entry{singles, batched} {
		m := &metaMachine{t: t, variant: []string{"one entry per write", "batched"}[i]}
		sm := openSM(t, t.TempDir(), storage.Replica{Group: metaGroup, ID: 1})
		for _, e := range l {
			res, err := sm.Apply([]raftnode.Entry{e})
			if err != nil {
				t.Fatalf("%s: entry %d: %v", m.variant, e.Index, err)
			}
			if batch, ok := res[0].([]any); ok {
				for _, o := range batch {
					outcomes[i] = append(outcomes[i], fmt.Sprint(o))
				}
			} else {
				// A malformed entry's outcome names its index, which
				// differs between the two logs.
				outcomes[i] = append(outcomes[i], entryIndex.ReplaceAllString(fmt.Sprint(res[0]), "entry N"))
			}
		}
		for _, line := range m.checkpoint(sm).lines {
			if !strings.HasPrefix(line, "applied ") {
				states[i] = append(states[i], line)
			}
		}
	}
	if !slices.Equal(outcomes[0], outcomes[1]) {
		d := firstDifference(outcomes[0], outcomes[1])
		t.Fatalf("outcomes differ (one entry per write, then batched):\n%s", d)
	}
	if !slices.Equal(states[0], states[1]) {
		d := firstDifference(states[0], states[1])
		t.Fatalf("states differ (one entry per write, then batched):\n%s", d)
	}
	if len(batched) == len(singles) {
		t.Fatal("no batch formed: the test proved nothing")
	}
	t.Logf("%d writes and other commands in %d entries, batched into %d", len(outcomes[0]), len(singles), len(batched))
}

var entryIndex = regexp.MustCompile(`entry \d+`)

// rebatch rewrites log: every run of consecutive client writes is cut into
// batches of 1 to 8 writes stamped with their last write's stamp; singles
// holds each write as its own entry, batched each batch as one entry.
// Other entries are copied into both unchanged.
func rebatch(t *testing.T, log []raftnode.Entry, rng *rand.Rand) (singles, batched []raftnode.Entry) {
	t.Helper()
	add := func(l *[]raftnode.Entry, term uint64, cmd *grouppb.Command) {
		data, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		*l = append(*l, raftnode.Entry{Index: uint64(len(*l)) + 1, Term: term, Data: data})
	}
	var run []*grouppb.Command
	var runTerm uint64
	flush := func() {
		for len(run) > 0 {
			n := min(len(run), 1+rng.IntN(8))
			stamp := run[n-1].GetStamp()
			ws := make([]*kvpb.WriteRequest, n)
			for i, c := range run[:n] {
				ws[i] = c.GetWrite()
				add(&singles, runTerm, &grouppb.Command{Stamp: stamp, Op: &grouppb.Command_Write{Write: ws[i]}})
			}
			add(&batched, runTerm, &grouppb.Command{Stamp: stamp, Op: &grouppb.Command_Writes{Writes: &grouppb.WriteBatch{Writes: ws}}})
			run = run[n:]
		}
	}
	for _, e := range log {
		var cmd grouppb.Command
		if e.Data != nil && proto.Unmarshal(e.Data, &cmd) == nil && cmd.GetWrite() != nil {
			if e.Term != runTerm {
				flush()
			}
			run, runTerm = append(run, &cmd), e.Term
			continue
		}
		flush()
		for _, l := range []*[]raftnode.Entry{&singles, &batched} {
			*l = append(*l, raftnode.Entry{Index: uint64(len(*l)) + 1, Term: e.Term, Data: e.Data})
		}
	}
	flush()
	return singles, batched
}
