package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/internal/rpc"
)

// steppedTime is the machine's clocks with a wall-clock offset the test
// steps, as NTP or an operator would on the leader's machine.
type steppedTime struct {
	start  time.Time
	offset atomic.Int64 // nanoseconds
}

func (s *steppedTime) Wall() time.Time { return time.Now().Add(time.Duration(s.offset.Load())) }

func (s *steppedTime) Monotonic() time.Duration { return time.Since(s.start) }

// TestClockStepsKeepExactlyOnce steps every leader's wall clock two hours
// forward, then back, while clients append through lossy links (so they
// retry). With stamps taken from the wall clock, the forward step expires
// every session (TTL one hour) and retried appends apply twice.
func TestClockStepsKeepExactlyOnce(t *testing.T) {
	clock := &steppedTime{start: time.Now()}
	h := start(t, cluster.Options{Groups: 1, Time: clock})
	h.join(1)
	loss := lossy(h.seed, 0.2, 2*time.Millisecond)
	apps := h.startAppenders(6, 3, 10*time.Second, client.WithDialOptions(rpc.DialOptions(loss)...),
		client.WithAttemptTimeout(500*time.Millisecond))
	for _, step := range []time.Duration{2 * time.Hour, -3 * time.Hour, 5 * time.Hour, -4 * time.Hour} {
		time.Sleep(400 * time.Millisecond)
		clock.offset.Add(int64(step))
	}
	time.Sleep(400 * time.Millisecond)
	apps.stopAndCheck()
	// Replicated time followed the monotonic clock, not the steps: it is
	// within seconds of the real time, not hours ahead.
	for id := uint64(1); id <= 3; id++ {
		s := h.c.Group(cluster.Replica{Group: 1, ID: id})
		if s == nil {
			continue
		}
		if ahead := time.Duration(s.StateMachine().Now()-time.Now().UnixMilli()) * time.Millisecond; ahead > time.Minute {
			t.Fatalf("replica %d: replicated time %v ahead of real time: the wall-clock steps moved it", id, ahead)
		}
	}
}

// TestRetryAfterSessionExpiry loses the reply of an applied append, keeps
// the client from retrying until the session has expired (others' writes
// advance replicated time), and checks that the retry is refused with
// ErrSessionExpired, that the client reports the outcome unknown, and that
// the append is applied exactly once. The client's next write works in a
// new session.
func TestRetryAfterSessionExpiry(t *testing.T) {
	const ttl = 300 * time.Millisecond
	h := start(t, cluster.Options{Groups: 1, Limits: group.Limits{SessionTTL: ttl}})
	h.join(1)
	other := h.client()
	// Another key of k's shard: its writes advance the shard's time.
	neighbour := ""
	for i := 0; neighbour == ""; i++ {
		if k := fmt.Sprint("n", i); controller.ShardOf([]byte(k), 10) == controller.ShardOf([]byte("k"), 10) {
			neighbour = k
		}
	}
	var held atomic.Bool
	expired := make(chan error, 8)
	released := make(chan struct{}) // closed when the lost reply's hold ends
	hold := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if held.Load() {
			// The network is down while the reply is held: a retry (the
			// client's attempts give up on their own deadlines, and batched
			// calls leave on other goroutines) gets through only after.
			<-released
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		ws, errs := writesOf(req, reply, err)
		appended := false
		for i, w := range ws {
			appended = appended || w.GetOp() == kvpb.WriteOp_WRITE_OP_APPEND && errs[i] == nil
			if errors.Is(kvpb.Errors.FromStatus(errs[i]), rpcerr.ErrSessionExpired) {
				expired <- errs[i]
			}
		}
		if appended && held.CompareAndSwap(false, true) {
			// The append is applied; its reply is "lost" until others
			// have written for three TTLs.
			deadline := time.Now().Add(3 * ttl)
			for i := 0; time.Now().Before(deadline); i++ {
				h.put(other, neighbour, "other")
				time.Sleep(20 * time.Millisecond)
			}
			close(released)
			return status.Error(codes.Unavailable, "injected reply loss")
		}
		return err
	})
	cl := h.client(client.WithDialOptions(rpc.DialOptions(hold)...))
	_, err := cl.Append(h.ctx, []byte("k"), []byte("x"))
	if !errors.Is(err, client.ErrUnknownOutcome) {
		t.Fatalf("append whose session expired before its retry: %v, want ErrUnknownOutcome", err)
	}
	select {
	case e := <-expired:
		t.Logf("retry refused: %v", e)
	default:
		t.Fatal("the retry was not refused with ErrSessionExpired")
	}
	got, err := cl.Get(h.ctx, []byte("k"))
	v := got.Value
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(v), "x"); n != 1 {
		t.Fatalf("value %q: the append was applied %d times", v, n)
	}
	if _, err := cl.Append(h.ctx, []byte("k"), []byte("y")); err != nil {
		t.Fatalf("next write after the expiry: %v", err)
	}
	if got, _ := cl.Get(h.ctx, []byte("k")); !strings.HasSuffix(string(got.Value), "xy") {
		t.Fatalf("value %q", v)
	}
}

// writesOf returns the writes a KV call carried (a Write, or the writes
// of a Batch) and each one's outcome, as a client interceptor sees them.
func writesOf(req, reply any, err error) ([]*kvpb.WriteRequest, []error) {
	switch r := req.(type) {
	case *kvpb.WriteRequest:
		return []*kvpb.WriteRequest{r}, []error{err}
	case *kvpb.BatchRequest:
		var ws []*kvpb.WriteRequest
		var errs []error
		results := reply.(*kvpb.BatchReply).GetResults()
		for i, op := range r.GetOps() {
			if w := op.GetWrite(); w != nil {
				ws = append(ws, w)
				if err == nil && i < len(results) {
					errs = append(errs, results[i].Err())
				} else {
					errs = append(errs, err)
				}
			}
		}
		return ws, errs
	}
	return nil, nil
}

// TestOversizedRequestsFailFast: a value over the limit is refused by the
// client before sending, and one over gRPC's receive limit (a client told
// the servers accept more than they do) is a definite ErrValueTooLarge,
// not an unknown outcome after the whole timeout. Nothing is written.
func TestOversizedRequestsFailFast(t *testing.T) {
	h := startOneGroup(t)
	for _, tc := range []struct {
		name string
		cl   *client.Client
		size int
	}{
		{"over the value limit", h.client(), 5 << 20},
		{"over gRPC's receive limit", h.client(client.WithLimits(4<<10, 64<<20)), rpc.MaxMessageBytes + 1<<20},
	} {
		ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
		start := time.Now()
		_, err := tc.cl.Put(ctx, []byte("big"), make([]byte, tc.size))
		cancel()
		if !errors.Is(err, client.ErrValueTooLarge) || errors.Is(err, client.ErrUnknownOutcome) {
			t.Fatalf("%s: %v, want ErrValueTooLarge", tc.name, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%s: took %v", tc.name, d)
		}
	}
	if got, err := h.client().Get(h.ctx, []byte("big")); err != nil || got.Found {
		t.Fatalf("a refused value was written (found %v, %v)", got.Found, err)
	}
}

// TestCASContention: clients increment one counter by compare-and-swap
// (read the value and version, put value+1 if the version is unchanged),
// through 10% request and reply loss, so conditional writes are retried.
// The final value is the number of increments that succeeded, and the
// key's version follows it (the first one created the key).
func TestCASContention(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1})
	h.join(1)
	const clients, attempts = 6, 25
	loss := lossy(h.seed, 0.1, 2*time.Millisecond)
	var succeeded, unknown, failed atomic.Int64
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := h.client(client.WithDialOptions(rpc.DialOptions(loss)...), client.WithAttemptTimeout(500*time.Millisecond))
			for i := 0; i < attempts; i++ {
				ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
				got, err := cl.Get(ctx, []byte("counter"))
				if err != nil {
					cancel()
					t.Errorf("get: %v", err)
					return
				}
				n := 0
				if got.Found {
					if n, err = strconv.Atoi(string(got.Value)); err != nil {
						cancel()
						t.Errorf("counter %q", got.Value)
						return
					}
				}
				res, err := cl.Put(ctx, []byte("counter"), []byte(strconv.Itoa(n+1)), client.IfVersion(got.Version))
				cancel()
				switch {
				case errors.Is(err, client.ErrUnknownOutcome):
					unknown.Add(1)
				case err != nil:
					t.Errorf("put: %v", err)
					return
				case res.Succeeded:
					succeeded.Add(1)
					if res.Version != got.Version+1 {
						t.Errorf("a CAS on version %d made version %d", got.Version, res.Version)
					}
				default:
					failed.Add(1)
					if res.Version == got.Version {
						t.Errorf("a CAS on version %d failed, and the key is still at that version", got.Version)
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	got, err := h.client().Get(h.ctx, []byte("counter"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(string(got.Value))
	t.Logf("%d increments succeeded, %d lost the race, %d unknown; counter %d at version %d",
		succeeded.Load(), failed.Load(), unknown.Load(), n, got.Version)
	// An unknown outcome was applied once or not at all.
	if s := int(succeeded.Load()); n < s || n > s+int(unknown.Load()) {
		t.Fatalf("counter %d after %d successful increments (%d unknown)", n, s, unknown.Load())
	}
	if got.Version != uint64(n) {
		t.Fatalf("counter %d at version %d: every increment is one write", n, got.Version)
	}
	if succeeded.Load() == 0 || failed.Load() == 0 {
		t.Fatalf("no contention: %d succeeded, %d failed", succeeded.Load(), failed.Load())
	}
}

// TestVersionsSurviveMigration: a key written three times keeps its value
// and version 3 when its shard moves to another group; the next put makes
// it 4, and a conditional write on the old version fails there.
func TestVersionsSurviveMigration(t *testing.T) {
	h := start(t, cluster.Options{Groups: 2})
	h.join(1, 2)
	h.waitSettled()
	cl := h.client()
	const k = "moved"
	h.put(cl, k, "a")
	h.appendTo(cl, k, "b")
	h.appendTo(cl, k, "c")
	cfg := cl.Config()
	shard := controller.ShardOf([]byte(k), len(cfg.Shards))
	to := uint64(1)
	if cfg.Shards[shard] == 1 {
		to = 2
	}
	ctl, err := h.c.ControllerClient()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if _, err := ctl.Move(h.ctx, shard, to); err != nil {
		t.Fatal(err)
	}
	h.waitSettled()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	got, err := cl.Get(ctx, []byte(k))
	if err != nil || string(got.Value) != "abc" || got.Version != 3 {
		t.Fatalf("after the move to group %d: %q version %d, %v", to, got.Value, got.Version, err)
	}
	if g := cl.Config().Shards[shard]; g != to {
		t.Fatalf("the client routes shard %d to group %d, want %d", shard, g, to)
	}
	res, err := cl.Put(ctx, []byte(k), []byte("d"), client.IfVersion(2))
	if err != nil || res.Succeeded || res.Version != 3 {
		t.Fatalf("a CAS on a stale version after the move: %+v, %v", res, err)
	}
	res, err = cl.Put(ctx, []byte(k), []byte("d"), client.IfVersion(3), client.WithValue())
	if err != nil || !res.Succeeded || res.Version != 4 || string(res.Value) != "d" {
		t.Fatalf("a CAS on the current version after the move: %+v, %v", res, err)
	}
	// IfValue(nil) is a condition (an empty value), not none.
	if res, err = cl.Put(ctx, []byte(k), []byte("e"), client.IfValue(nil)); err != nil || res.Succeeded || res.Version != 4 {
		t.Fatalf("a put if the value is empty: %+v, %v", res, err)
	}
}
