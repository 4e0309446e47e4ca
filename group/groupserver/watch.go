package groupserver

import (
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
)

// Watch implements kvpb.KVServer: it streams this replica's changes to
// the watched keys of the request's shards (see package group/watch). Any
// replica serves it. A replica that knows no leader ends the stream at its
// next progress tick, so that a client watching a follower cut off from
// its group moves to a replica that still hears of new changes.
func (s *Server) Watch(req *kvpb.WatchRequest, stream grpc.ServerStreamingServer[kvpb.WatchReply]) error {
	if err := s.checkWatch(req); err != nil {
		return kvpb.Errors.ToStatus(err)
	}
	w := s.watch.Watch(req)
	defer w.Close()
	tick := time.NewTicker(s.cfg.WatchProgress)
	defer tick.Stop()
	for {
		reply, err := w.Next(stream.Context(), tick.C)
		if err != nil {
			return kvpb.Errors.ToStatus(err)
		}
		if reply.ProgressIndex != 0 && s.node.Status().Leader == 0 {
			return kvpb.Errors.ToStatus(s.node.NotLeader())
		}
		reply.Header = s.header()
		if err := stream.Send(reply); err != nil {
			return err
		}
	}
}

// Watchers returns the number of watch streams this replica serves.
func (s *Server) Watchers() int { return s.watch.Watchers() }

// checkWatch refuses a malformed watch: a key watch needs a valid key, a
// prefix is at most a key's size, shards exist and are named once.
func (s *Server) checkWatch(req *kvpb.WatchRequest) error {
	if !req.GetPrefix() || len(req.GetKey()) > 0 {
		if err := s.cfg.Limits.Check(kvpb.WriteOp_WRITE_OP_DELETE, req.GetKey(), nil); err != nil {
			return err
		}
	}
	n := len(s.sm.View().Shards)
	seen := map[uint32]bool{}
	for _, ws := range req.GetShards() {
		switch {
		case n > 0 && int(ws.GetShard()) >= n:
			return fmt.Errorf("%w: shard %d of %d", rpcerr.ErrMalformed, ws.GetShard(), n)
		case seen[ws.GetShard()]:
			return fmt.Errorf("%w: shard %d named twice", rpcerr.ErrMalformed, ws.GetShard())
		case ws.GetAfterIndex() > 0 && ws.GetArrivedIn() > 0:
			return fmt.Errorf("%w: shard %d both resumes and waits for its arrival", rpcerr.ErrMalformed, ws.GetShard())
		}
		seen[ws.GetShard()] = true
	}
	if len(req.GetShards()) == 0 {
		return fmt.Errorf("%w: a watch names its shards", rpcerr.ErrMalformed)
	}
	return nil
}
