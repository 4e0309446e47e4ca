package ctlclient_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/grpctest"
	"github.com/shardkv/shardkv/internal/rpc"
)

// fakeController answers Query itself (leader) or with a NOT_LEADER naming
// leaderAddr.
type fakeController struct {
	controllerpb.UnimplementedControllerServer
	leaderAddr string
}

func (f *fakeController) Query(context.Context, *controllerpb.QueryRequest) (*controllerpb.QueryReply, error) {
	if f.leaderAddr != "" {
		return nil, controllerpb.Errors.ToStatus(&rpcerr.NotLeaderError{Leader: 4, Addr: f.leaderAddr})
	}
	return &controllerpb.QueryReply{Config: &controllerpb.Config{Num: 7, Shards: []uint64{0}}, NumShards: 1}, nil
}

// serveController serves s as a controller replica and returns its
// address; it stops when the test ends.
func serveController(t *testing.T, s controllerpb.ControllerServer) string {
	t.Helper()
	return grpctest.Serve(t, func(g *grpc.Server) { controllerpb.RegisterControllerServer(g, s) })
}

// dial returns a client of the controller replicas at addrs, closed when
// the test ends.
func dial(t *testing.T, addrs ...string) *ctlclient.Client {
	t.Helper()
	c, err := ctlclient.New(addrs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestFollowsLeaderOutsideItsList: a client given only a follower's address
// (its list predates a controller replica's replacement) follows the
// NOT_LEADER to a leader it was not given.
func TestFollowsLeaderOutsideItsList(t *testing.T) {
	leader := serveController(t, &fakeController{})
	follower := serveController(t, &fakeController{leaderAddr: leader})
	c := dial(t, follower)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg, _, err := c.Query(ctx, -1)
	if err != nil || cfg.Num != 7 {
		t.Fatalf("query through a follower naming a leader outside the list: %v %v", cfg.Num, err)
	}
}

// stoppedController takes requests and never answers (a SIGSTOPped
// leader); it records the deadline budget of each.
type stoppedController struct {
	controllerpb.UnimplementedControllerServer
	grpctest.Stopped
}

func (s *stoppedController) Query(ctx context.Context, _ *controllerpb.QueryRequest) (*controllerpb.QueryReply, error) {
	return nil, s.Hang(ctx)
}

// electingController names stale as the leader until elected is closed,
// then leader.
type electingController struct {
	controllerpb.UnimplementedControllerServer
	elected       chan struct{}
	stale, leader string // "" as leader: this replica leads
}

func (e *electingController) Query(ctx context.Context, r *controllerpb.QueryRequest) (*controllerpb.QueryReply, error) {
	lead := e.stale
	select {
	case <-e.elected:
		lead = e.leader
	default:
	}
	return (&fakeController{leaderAddr: lead}).Query(ctx, r)
}

// TestStoppedLeaderCostsOneAttempt: while the election that replaces a
// stopped controller leader takes longer than an attempt, the followers
// keep naming the stopped one; the client must not follow them back to it
// for another full attempt after it let one time out.
func TestStoppedLeaderCostsOneAttempt(t *testing.T) {
	stopped := &stoppedController{}
	elected := make(chan struct{})
	stoppedAddr := serveController(t, stopped)
	f1 := &electingController{elected: elected, stale: stoppedAddr}
	f2 := &electingController{elected: elected, stale: stoppedAddr}
	addr1, addr2 := serveController(t, f1), serveController(t, f2)
	f1.leader = addr2 // after the election replica 2 leads
	c := dial(t, stoppedAddr, addr1, addr2)
	// The election ends while the suspicion is fresh (rpc.SettleAfter
	// after the first attempt's timeout).
	time.AfterFunc(1600*time.Millisecond, func() { close(elected) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, _, err := c.Query(ctx, -1); err != nil {
		t.Fatal(err)
	}
	budgets := stopped.Budgets()
	t.Logf("answered after %v; attempts at the stopped leader: %v", time.Since(start).Round(time.Millisecond), budgets)
	if len(budgets) != 1 {
		t.Errorf("the stopped leader got %d attempts, want 1", len(budgets))
	}
}

// slowOnceLeader leads; its first Query takes 1.2 s (one slow answer: a GC
// pause, an fsync stall), every later one is immediate.
type slowOnceLeader struct {
	controllerpb.UnimplementedControllerServer
	n atomic.Int32
}

func (s *slowOnceLeader) Query(ctx context.Context, r *controllerpb.QueryRequest) (*controllerpb.QueryReply, error) {
	if s.n.Add(1) == 1 {
		time.Sleep(1200 * time.Millisecond)
	}
	return (&fakeController{}).Query(ctx, r)
}

// TestSlowOnceLeaderIsNotShunned: a live leader that was slow once (its
// attempt timed out, so it is suspected) and that the followers keep
// naming is asked again once the suspicion has settled (rpc.SettleAfter),
// not only once it expires (rpc.SuspectFor): it is the only replica that
// can answer. A review found it shunned for the whole 3 s.
func TestSlowOnceLeaderIsNotShunned(t *testing.T) {
	lead := &slowOnceLeader{}
	la := serveController(t, lead)
	c := dial(t, la, serveController(t, &fakeController{leaderAddr: la}), serveController(t, &fakeController{leaderAddr: la}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, _, err := c.Query(ctx, -1); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("answered after %v; the leader got %d queries", took.Round(time.Millisecond), lead.n.Load())
	// One timed-out attempt (1 s), then the settle time (1 s) and a
	// backoff step, then an answer; shunned until the suspicion expired,
	// it took over 4 s.
	if took > rpc.SuspectFor+600*time.Millisecond {
		t.Errorf("a slow-once leader was shunned for %v", took)
	}
}

// neverWatches takes Watch calls and never answers (a stopped process, or
// dropped packets).
type neverWatches struct {
	controllerpb.UnimplementedControllerServer
}

func (neverWatches) Watch(ctx context.Context, _ *controllerpb.WatchRequest) (*controllerpb.QueryReply, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestNewerLeavesASilentReplica: the shared long poll does not sit on a
// silent controller replica for the whole long-poll limit (11 s, which a
// review measured) while another replica has a newer configuration.
func TestNewerLeavesASilentReplica(t *testing.T) {
	w := &watchedController{num: 6, published: make(chan struct{})}
	c := dial(t, serveController(t, neverWatches{}), serveController(t, w))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	for {
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		n, err := c.Newer(wctx, 5)
		wcancel()
		if err == nil && n == 6 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("never learned of configuration 6")
		}
	}
	took := time.Since(start)
	t.Logf("learned of configuration 6 after %v", took.Round(time.Millisecond))
	if took > 2*time.Second+controllerpb.WatchLimit/2 {
		t.Errorf("the feed sat on a silent replica for %v", took)
	}
}

// TestNewerAfterClose fails at once.
func TestNewerAfterClose(t *testing.T) {
	c, err := ctlclient.New([]string{serveController(t, neverWatches{})})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Newer(context.Background(), 0); !errors.Is(err, ctlclient.ErrClosed) {
		t.Fatalf("Newer after Close: %v, want ErrClosed", err)
	}
}

// stuckController opens sessions and never answers a Leave until release
// is closed.
type stuckController struct {
	controllerpb.UnimplementedControllerServer
	release chan struct{}
	leaves  atomic.Int32
}

func (s *stuckController) OpenSession(context.Context, *controllerpb.OpenSessionRequest) (*controllerpb.ChangeReply, error) {
	return &controllerpb.ChangeReply{}, nil
}

func (s *stuckController) Leave(ctx context.Context, _ *controllerpb.LeaveRequest) (*controllerpb.ChangeReply, error) {
	s.leaves.Add(1)
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return nil, controllerpb.Errors.ToStatus(rpcerr.ErrReadTimeout)
}

// TestChangeWaitsForTheOneInFlightOnlyWithinItsDeadline: a client sends
// one change at a time (its sequence numbers only grow); a second change
// waits for the first only as long as its own context allows, and fails
// then without sending anything.
func TestChangeWaitsForTheOneInFlightOnlyWithinItsDeadline(t *testing.T) {
	s := &stuckController{release: make(chan struct{})}
	defer close(s.release)
	c := dial(t, serveController(t, s))
	first, cancelFirst := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancelFirst()
	go func() { _, _ = c.Leave(first, []uint64{1}, false) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.leaves.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first change never reached the controller")
		}
		time.Sleep(time.Millisecond)
	}
	second, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Leave(second, []uint64{2}, false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a change behind one in flight, past its deadline: %v, want DeadlineExceeded", err)
	}
	if errors.Is(err, ctlclient.ErrUnknownOutcome) {
		t.Fatalf("a change never sent reported an unknown outcome: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the second change returned after %v: it waited past its deadline", d)
	}
	if n := s.leaves.Load(); n != 1 {
		t.Fatalf("the controller got %d leaves, want only the first", n)
	}
}
