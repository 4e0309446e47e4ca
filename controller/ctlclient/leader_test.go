package ctlclient_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller/ctlclient"
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

func serve(t *testing.T, f *fakeController) string {
	return serveController(t, f)
}

// TestFollowsLeaderOutsideItsList: a client given only a follower's address
// (its list predates a controller replica's replacement) follows the
// NOT_LEADER to a leader it was not given.
func TestFollowsLeaderOutsideItsList(t *testing.T) {
	leader := serve(t, &fakeController{})
	follower := serve(t, &fakeController{leaderAddr: leader})
	c, err := ctlclient.New([]string{follower})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
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
	mu      sync.Mutex
	budgets []time.Duration
}

func (s *stoppedController) Query(ctx context.Context, _ *controllerpb.QueryRequest) (*controllerpb.QueryReply, error) {
	d, _ := ctx.Deadline()
	s.mu.Lock()
	s.budgets = append(s.budgets, time.Until(d))
	s.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
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
	c, err := ctlclient.New([]string{stoppedAddr, addr1, addr2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.AfterFunc(2500*time.Millisecond, func() { close(elected) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, _, err := c.Query(ctx, -1); err != nil {
		t.Fatal(err)
	}
	stopped.mu.Lock()
	defer stopped.mu.Unlock()
	t.Logf("answered after %v; attempts at the stopped leader: %v", time.Since(start).Round(time.Millisecond), stopped.budgets)
	if len(stopped.budgets) != 1 {
		t.Errorf("the stopped leader got %d attempts, want 1", len(stopped.budgets))
	}
}

func serveController(t *testing.T, s controllerpb.ControllerServer) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	controllerpb.RegisterControllerServer(g, s)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	return l.Addr().String()
}
