package client_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/internal/grpctest"
)

// stoppedLeaderGroup is one group of three fake replicas whose leader,
// replica 0, is stopped (it takes requests and never answers, as a
// SIGSTOPped process whose kernel still acknowledges packets). Until
// elected is closed the followers still name it as the leader; after,
// replica 2 leads and replica 1 names it.
type stoppedLeaderGroup struct {
	addrs   []string
	elected chan struct{}
	leader  grpctest.Stopped // replica 0
}

type fakeReplica struct {
	kvpb.UnimplementedKVServer
	g *stoppedLeaderGroup
	i int
}

func (r *fakeReplica) Get(ctx context.Context, _ *kvpb.GetRequest) (*kvpb.GetReply, error) {
	g := r.g
	elected := false
	select {
	case <-g.elected:
		elected = true
	default:
	}
	switch {
	case r.i == 0:
		return nil, g.leader.Hang(ctx)
	case elected && r.i == 2:
		return &kvpb.GetReply{Found: true, Value: []byte("v")}, nil
	case elected:
		return nil, kvpb.Errors.ToStatus(&rpcerr.NotLeaderError{Leader: 3, Addr: g.addrs[2]})
	}
	return nil, kvpb.Errors.ToStatus(&rpcerr.NotLeaderError{Leader: 1, Addr: g.addrs[0]})
}

type fakeController struct {
	controllerpb.UnimplementedControllerServer
	cfg *controllerpb.Config
}

func (f *fakeController) Query(context.Context, *controllerpb.QueryRequest) (*controllerpb.QueryReply, error) {
	return &controllerpb.QueryReply{Config: f.cfg, NumShards: uint32(len(f.cfg.Shards))}, nil
}

// TestStoppedLeaderCostsOneAttempt is the regression test of a
// TestLeaderStopped failure: while an election outlasted the first round
// of short attempts, the client's next round went back to the stopped
// leader (the replica it last saw leading, and the one the followers
// still named) with a full two-second attempt. A replica that let an
// attempt time out is now tried after the others, so however long the
// election takes, the stopped leader gets one short attempt.
func TestStoppedLeaderCostsOneAttempt(t *testing.T) {
	g := &stoppedLeaderGroup{elected: make(chan struct{})}
	for i := range 3 {
		g.addrs = append(g.addrs, grpctest.Serve(t, func(s *grpc.Server) { kvpb.RegisterKVServer(s, &fakeReplica{g: g, i: i}) }))
	}
	cfg := &controllerpb.Config{Num: 1, Shards: make([]uint64, 10), Groups: []*controllerpb.Group{{Id: 1, Addrs: g.addrs}}}
	for i := range cfg.Shards {
		cfg.Shards[i] = 1
	}
	ctl := grpctest.Serve(t, func(s *grpc.Server) { controllerpb.RegisterControllerServer(s, &fakeController{cfg: cfg}) })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const full = 2 * time.Second
	c, err := client.New(ctx, []string{ctl}, client.WithAttemptTimeout(full))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The election takes a second: longer than a round of first attempts.
	time.AfterFunc(time.Second, func() { close(g.elected) })
	var served atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
				if _, err := c.Get(ctx, []byte("k")); err != nil {
					t.Errorf("get: %v", err)
					return
				}
				served.Add(1)
			}
		}()
	}
	wg.Wait()
	atLeader := g.leader.Budgets()
	t.Logf("%d gets served; attempts at the stopped leader with budgets %v", served.Load(), atLeader)
	if len(atLeader) == 0 {
		t.Fatal("the stopped leader, the replica the client starts with, got no attempt")
	}
	// Concurrent first requests may each try it once before the first
	// timeout marks it; none may give it a full attempt.
	if len(atLeader) > 4 {
		t.Errorf("the stopped leader got %d attempts (at most one per concurrent request)", len(atLeader))
	}
	for _, d := range atLeader {
		if d > full/2 {
			t.Errorf("an attempt at the stopped leader had a %v budget: a full attempt", d)
		}
	}
}
