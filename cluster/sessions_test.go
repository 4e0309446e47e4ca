package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/kvpb"
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
	hold := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		w, _ := req.(*kvpb.WriteRequest)
		if w.GetOp() == kvpb.WriteOp_WRITE_OP_APPEND && err == nil && held.CompareAndSwap(false, true) {
			// The append is applied; its reply is "lost" until others
			// have written for three TTLs.
			deadline := time.Now().Add(3 * ttl)
			for i := 0; time.Now().Before(deadline); i++ {
				h.put(other, neighbour, "other")
				time.Sleep(20 * time.Millisecond)
			}
			return status.Error(codes.Unavailable, "injected reply loss")
		}
		if errors.Is(kvpb.Errors.FromStatus(err), group.ErrSessionExpired) {
			expired <- err
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

// TestOversizedRequestsFailFast: a value over the limit is refused by the
// client before sending, and one over gRPC's receive limit (a client told
// the servers accept more than they do) is a definite ErrValueTooLarge,
// not an unknown outcome after the whole timeout. Nothing is written.
func TestOversizedRequestsFailFast(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1})
	h.join(1)
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
