package ctlclient_test

import (
	"context"
	"net"
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
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	controllerpb.RegisterControllerServer(s, f)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
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
