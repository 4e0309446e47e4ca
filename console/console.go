package console

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/rpc"
)

//go:embed static
var static embed.FS

const (
	historyLen = 50  // configurations the history keeps
	trafficLen = 300 // samples per group: five minutes at the default interval
)

// Config configures a Console.
type Config struct {
	// Controller is a client of the cluster's controller; the console
	// does not close it.
	Controller *ctlclient.Client
	// Dial are the options of the connections to replicas (the cluster
	// id, at least: rpc.WithClusterID of package internal/rpc, as
	// cmd/shardkv dials).
	Dial []grpc.DialOption
	// Interval is how often the state is rebuilt (default 1 s).
	Interval time.Duration
}

// Console keeps the state the page shows. Run it, and serve Handler.
type Console struct {
	cfg  Config
	pool *rpc.Pool

	mu    sync.RWMutex
	state State

	// poller's own
	configs map[uint64]config.Config // the history's configurations, by number
	seen    map[uint64]time.Time
	settled map[uint64]time.Time
	last    map[string]reading // each replica's previous latency reading, by address
	traffic map[uint64][]Sample
}

type reading struct {
	at  time.Time
	lat *kvpb.Latency
}

// New returns a console of the cluster cfg.Controller controls.
func New(cfg Config) *Console {
	cfg.Interval = cmp.Or(cfg.Interval, time.Second)
	return &Console{cfg: cfg, pool: rpc.NewPool(cfg.Dial...), configs: map[uint64]config.Config{},
		seen: map[uint64]time.Time{}, settled: map[uint64]time.Time{}, last: map[string]reading{},
		traffic: map[uint64][]Sample{}}
}

// Run rebuilds the state every Interval until ctx ends, then closes the
// console's connections.
func (c *Console) Run(ctx context.Context) {
	defer c.pool.Close()
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// State returns the state as of the last poll.
func (c *Console) State() State {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.state
}

// Handler serves the page at / and its state at /api/console/state.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	files, _ := fs.Sub(static, "static")
	mux.Handle("/", http.FileServer(http.FS(files)))
	mux.HandleFunc("/api/console/state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(c.State())
	})
	return mux
}

// Poll rebuilds the state once. Run calls it; tests call it directly.
func (c *Console) Poll(ctx context.Context) {
	now := time.Now()
	ctx, cancel := context.WithTimeout(ctx, max(c.cfg.Interval, 2*time.Second))
	defer cancel()
	st := State{Time: now}
	latest, _, err := c.cfg.Controller.Query(ctx, -1)
	if err != nil {
		st.Error = fmt.Sprintf("cannot read the controller: %v", err)
		c.mu.Lock()
		prev := c.state
		prev.Time, prev.Error = now, st.Error
		c.state = prev
		c.mu.Unlock()
		return
	}
	st.ConfigNum = latest.Num
	c.learnHistory(ctx, latest, now)
	c.forgetGone(latest)
	statuses := c.statuses(ctx, latest)
	st.Groups = c.groups(latest, statuses, now)
	st.Shards = shards(latest, statuses)
	if _, ok := c.settled[latest.Num]; !ok && settled(latest, st.Shards, statuses) {
		c.settled[latest.Num] = now
	}
	st.History = c.history(latest.Num)
	c.mu.Lock()
	c.state = st
	c.mu.Unlock()
}

// learnHistory fetches the configurations after the last one known: the
// historyLen the history lists, and the one before them, which the oldest
// is described against.
func (c *Console) learnHistory(ctx context.Context, latest config.Config, now time.Time) {
	if _, ok := c.seen[latest.Num]; !ok {
		c.seen[latest.Num] = now
	}
	c.configs[latest.Num] = latest
	from := uint64(1)
	if latest.Num > historyLen {
		from = latest.Num - historyLen
	}
	for n := from; n < latest.Num; n++ {
		if _, ok := c.configs[n]; ok {
			continue
		}
		cfg, _, err := c.cfg.Controller.Query(ctx, int64(n))
		if err != nil {
			return // next poll
		}
		c.configs[n] = cfg
	}
	for n := range c.configs {
		if n < from {
			delete(c.configs, n)
			delete(c.seen, n)
			delete(c.settled, n)
		}
	}
}

// forgetGone closes the connections to, and forgets the last readings of,
// the addresses cfg no longer names (replicas replaced or moved, groups
// that left): a controller process runs its console for as long as the
// cluster lives.
func (c *Console) forgetGone(cfg config.Config) {
	named := map[string]bool{}
	for _, addrs := range cfg.Groups {
		for _, a := range addrs {
			named[a] = true
		}
	}
	c.pool.Retain(func(a string) bool { return named[a] })
	for a := range c.last {
		if !named[a] {
			delete(c.last, a)
		}
	}
}

// status is one replica's answer.
type status struct {
	addr  string
	reply *kvpb.StatusReply
	err   error
}

// statuses asks every replica of every group for its Status, at once.
func (c *Console) statuses(ctx context.Context, cfg config.Config) map[uint64][]status {
	out := map[uint64][]status{}
	var wg sync.WaitGroup
	for _, gid := range cfg.GroupIDs() {
		ss := make([]status, len(cfg.Groups[gid]))
		out[gid] = ss
		for i, addr := range cfg.Groups[gid] {
			wg.Go(func() { // each fills its own element: no lock
				ss[i].addr = addr
				conn, err := c.pool.Get(addr)
				if err != nil {
					ss[i].err = err
					return
				}
				ss[i].reply, ss[i].err = kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{Group: gid})
			})
		}
	}
	wg.Wait()
	return out
}

// leaderOf is the status of the group's leader (nil if none answered as one).
func leaderOf(ss []status) *kvpb.StatusReply {
	for _, s := range ss {
		if r := s.reply; r != nil && r.GetLeader() == r.GetReplica() && r.GetLeader() != 0 {
			return r
		}
	}
	return nil
}

func (c *Console) groups(cfg config.Config, statuses map[uint64][]status, now time.Time) []Group {
	owned := map[uint64]int{}
	for _, g := range cfg.Shards {
		owned[g]++
	}
	var out []Group
	for _, gid := range cfg.GroupIDs() {
		ss := statuses[gid]
		g := Group{ID: gid, Shards: owned[gid]}
		lead := leaderOf(ss)
		for _, s := range ss {
			r := Replica{Addr: s.addr, Role: "unreachable"}
			if s.err != nil {
				r.Error = s.err.Error()
			}
			if rep := s.reply; rep != nil {
				r.ID, r.Term, r.Commit, r.Applied = rep.GetReplica(), rep.GetTerm(), rep.GetCommit(), rep.GetApplied()
				r.ConfigNum, r.DataBytes, r.Role = rep.GetConfigNum(), rep.GetDataBytes(), "follower"
				if rep.GetLeader() == rep.GetReplica() && rep.GetLeader() != 0 {
					r.Role = "leader"
				}
				if lead != nil && lead.GetCommit() > r.Applied {
					r.Lag = lead.GetCommit() - r.Applied
				}
			}
			g.Replicas = append(g.Replicas, r)
		}
		s := c.sample(gid, ss, now)
		g.OpsPerSec, g.P99Ms, g.Traffic = s.OpsPerSec, s.P99Ms, slices.Clone(c.traffic[gid])
		out = append(out, g)
	}
	for gid := range c.traffic {
		if _, ok := cfg.Groups[gid]; !ok {
			delete(c.traffic, gid)
		}
	}
	return out
}

// sample adds the group's traffic since the previous poll: the sum over
// its replicas of the differences of their cumulative latency histograms.
func (c *Console) sample(gid uint64, ss []status, now time.Time) Sample {
	var count uint64
	var buckets []uint64
	var upper []float64
	var secs float64
	for _, s := range ss {
		if s.reply == nil || s.reply.GetRequests() == nil {
			continue
		}
		cur := s.reply.GetRequests()
		prev, ok := c.last[s.addr]
		c.last[s.addr] = reading{at: now, lat: cur}
		if !ok || !continues(prev.lat, cur) {
			continue // first reading, or the replica restarted
		}
		secs = max(secs, now.Sub(prev.at).Seconds())
		count += cur.GetCount() - prev.lat.GetCount()
		if buckets == nil {
			buckets, upper = make([]uint64, len(cur.GetCumulative())), cur.GetUpperMs()
		}
		for i, v := range cur.GetCumulative() {
			if i < len(buckets) && i < len(prev.lat.GetCumulative()) {
				buckets[i] += v - prev.lat.GetCumulative()[i]
			}
		}
	}
	s := Sample{Time: now}
	if secs > 0 {
		s.OpsPerSec = float64(count) / secs
		s.P99Ms = quantile(0.99, count, upper, buckets)
	}
	tr := append(c.traffic[gid], s)
	if len(tr) > trafficLen {
		tr = tr[len(tr)-trafficLen:]
	}
	c.traffic[gid] = tr
	return s
}

// continues reports whether cur can be a later reading of the same
// histogram as prev: their difference is itself a histogram (no bucket
// went down, each bucket grew at least as much as the one below, none
// more than the count). A replica that restarted may have answered more
// requests since than before, so its count alone cannot tell; a bucket
// that went down would wrap around in the difference.
func continues(prev, cur *kvpb.Latency) bool {
	if cur.GetCount() < prev.GetCount() || len(cur.GetCumulative()) != len(prev.GetCumulative()) {
		return false
	}
	var below uint64
	for i, v := range cur.GetCumulative() {
		p := prev.GetCumulative()[i]
		if v < p || v-p < below || v-p > cur.GetCount()-prev.GetCount() {
			return false
		}
		below = v - p
	}
	return true
}

// quantile is the upper bound of the first bucket holding the q-quantile
// of count requests (the last finite bound if it lies beyond).
func quantile(q float64, count uint64, upper []float64, cumulative []uint64) float64 {
	if count == 0 || len(upper) == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(count)))
	for i, v := range cumulative {
		if v >= want {
			return upper[i]
		}
	}
	return upper[len(upper)-1]
}

var stateNames = map[kvpb.ShardState]string{
	kvpb.ShardState_SHARD_STATE_SERVING:    "serving",
	kvpb.ShardState_SHARD_STATE_PULLING:    "pulling",
	kvpb.ShardState_SHARD_STATE_OFFERING:   "offering",
	kvpb.ShardState_SHARD_STATE_CONFIRMING: "confirming",
	kvpb.ShardState_SHARD_STATE_HELD:       "held",
	kvpb.ShardState_SHARD_STATE_RESTORING:  "restoring",
}

func shards(cfg config.Config, statuses map[uint64][]status) []Shard {
	held := map[uint64]map[uint32]*kvpb.ShardStatus{}
	for gid, ss := range statuses {
		if lead := leaderOf(ss); lead != nil {
			held[gid] = map[uint32]*kvpb.ShardStatus{}
			for _, sh := range lead.GetShards() {
				held[gid][sh.GetShard()] = sh
			}
		}
	}
	out := make([]Shard, len(cfg.Shards))
	for i, gid := range cfg.Shards {
		out[i] = Shard{Shard: i, Group: gid, State: "unassigned"}
		if gid == 0 {
			continue
		}
		out[i].State = "waiting"
		if sh, ok := held[gid][uint32(i)]; ok {
			out[i].State, out[i].Peer, out[i].MovedBytes = stateNames[sh.GetState()], sh.GetPeerGroup(), sh.GetMovedBytes()
		}
	}
	return out
}

// settled reports whether every group's leader has applied cfg and serves
// every shard cfg gives it.
func settled(cfg config.Config, ss []Shard, statuses map[uint64][]status) bool {
	for gid := range cfg.Groups {
		lead := leaderOf(statuses[gid])
		if lead == nil || lead.GetConfigNum() < cfg.Num {
			return false
		}
	}
	for _, s := range ss {
		if s.Group != 0 && s.State != "serving" {
			return false
		}
	}
	return true
}

// history describes the known configurations, newest first, down to the
// first whose predecessor is not known (what changed cannot be said).
func (c *Console) history(latest uint64) []Change {
	var out []Change
	for n := latest; n >= 1 && len(out) < historyLen; n-- {
		cfg, ok := c.configs[n]
		prev, known := c.configs[n-1]
		if !ok || !known && n > 1 {
			break
		}
		ch := Change{Num: n, What: describe(prev, cfg)}
		if t, ok := c.seen[n]; ok {
			ch.Seen = &t
			if s, ok := c.settled[n]; ok {
				ch.Settled = &s
				ch.TookMs = float64(s.Sub(t).Microseconds()) / 1000
			}
		}
		out = append(out, ch)
	}
	return out
}

// describe says what changed from prev to cfg: groups that joined or
// left, and how many shards moved between groups.
func describe(prev, cfg config.Config) string {
	var parts []string
	var joined, left []string
	for _, g := range cfg.GroupIDs() {
		if _, ok := prev.Groups[g]; !ok {
			joined = append(joined, fmt.Sprint(g))
		}
	}
	for _, g := range prev.GroupIDs() {
		if _, ok := cfg.Groups[g]; !ok {
			left = append(left, fmt.Sprint(g))
		}
	}
	if len(joined) > 0 {
		parts = append(parts, "join "+strings.Join(joined, ", "))
	}
	if len(left) > 0 {
		parts = append(parts, "leave "+strings.Join(left, ", "))
	}
	moved := 0
	for i, g := range cfg.Shards {
		if i < len(prev.Shards) && prev.Shards[i] != g && prev.Shards[i] != 0 {
			moved++
		}
	}
	if moved > 0 {
		parts = append(parts, fmt.Sprintf("%d shard(s) moved", moved))
	}
	if len(parts) == 0 {
		for _, g := range cfg.GroupIDs() {
			if !slices.Equal(prev.Groups[g], cfg.Groups[g]) {
				parts = append(parts, fmt.Sprintf("replicas of group %d", g))
			}
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "first assignment")
		if prev.Num != 0 || cfg.Num != 1 {
			parts[0] = "no change"
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
