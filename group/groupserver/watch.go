package groupserver

import (
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/group/watch"
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
	w := s.watch.Watch(req, s.keyVersion(req))
	defer w.Close()
	tick := time.NewTicker(s.cfg.WatchProgress)
	defer tick.Stop()
	for {
		reply, err := w.Next(stream.Context(), tick.C)
		if err != nil {
			return kvpb.Errors.ToStatus(err)
		}
		if s.ctx.Err() != nil {
			// Stopped (a node dropping the replica waits for its streams:
			// Retire); the client moves to another replica.
			return kvpb.Errors.ToStatus(errStopping)
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

// keyVersion reads the watched key's version for a shard that starts from
// a version of it (unknown, and not needed, otherwise: see watch.Hub.Watch).
func (s *Server) keyVersion(req *kvpb.WatchRequest) watch.KeyVersion {
	for _, ws := range req.GetShards() {
		if ws.GetFromVersion() == 0 {
			continue
		}
		version, applied, err := s.sm.KeyVersion(req.GetKey())
		return watch.KeyVersion{Version: version, Applied: applied, Known: err == nil}
	}
	return watch.KeyVersion{}
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
		case ws.GetFromVersion() > 0 && (req.GetPrefix() || ws.GetAfterIndex() > 0 || ws.GetArrivedIn() > 0):
			return fmt.Errorf("%w: shard %d starts from a version, which is a key watch's start, alone", rpcerr.ErrMalformed, ws.GetShard())
		}
		seen[ws.GetShard()] = true
	}
	if len(req.GetShards()) == 0 {
		return fmt.Errorf("%w: a watch names its shards", rpcerr.ErrMalformed)
	}
	return nil
}
