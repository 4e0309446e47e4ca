package groupserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/group"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/internal/rpc"
)

// ReadShards implements grouppb.BackupServer: shards read for a backup. It
// proposes nothing, so it cannot change anything. The read index makes the
// export linearizable: it reflects every write acknowledged before the
// call, by this group or (through the handoff) by any earlier owner of the
// shards, and the group was at the backup's configuration, serving them, at
// the applied index it reflects. Any replica answers (a follower confirms
// the read index with its leader, as for a Get).
func (in internalAPI) ReadShards(req *grouppb.ReadShardsRequest, stream grpc.ServerStreamingServer[grouppb.BackupChunk]) error {
	s := in.s
	ctx, cancel := context.WithTimeout(stream.Context(), rpc.DeadPeerTimeout)
	err := s.node.ReadIndex(ctx)
	cancel()
	if err != nil {
		return kvpb.Errors.ToStatus(err)
	}
	shards := make([]int, len(req.GetShards()))
	for i, sh := range req.GetShards() {
		shards[i] = int(sh)
	}
	x, err := s.sm.ExportForBackup(req.GetConfigNum(), shards)
	if err != nil {
		return kvpb.Errors.ToStatus(err)
	}
	defer x.Close()
	for i, sh := range req.GetShards() {
		err := x.Chunks(i, s.cfg.ChunkBytes, func(c *grouppb.ShardChunk) error {
			return stream.Send(&grouppb.BackupChunk{Shard: sh, Kvs: c.GetKvs(), Sessions: c.GetSessions(), Last: c.GetLast(),
				AppliedIndex: x.Applied(), Replica: s.cfg.ID})
		})
		if err != nil {
			return kvpb.Errors.ToStatus(err)
		}
	}
	return nil
}

// RestoreChunks calls fn with the chunks of one shard of a backup, from
// chunk from on (numbered from 1: chunk 0 of a restore starts it and
// carries no data); the last one has Last set. An error from fn ends it
// with that error.
type RestoreChunks func(from uint64, fn func(chunk uint64, c *grouppb.ShardChunk) error) error

// ErrRestoreRefused: the group refused a restore entry (a shard that is
// not empty, or not this group's at that configuration); nothing more of
// the shard was loaded.
var ErrRestoreRefused = errors.New("groupserver: restore refused")

// RestoreShard loads one shard of a backup into the group through its
// log, at configuration num (the group must be at num and serve the shard,
// empty): restore entries, chunk 0 to start, then the backup's chunks. A
// proposal whose outcome is unknown (a leader change) is followed by a
// linearizable look at the shard, and the load resumes where the group is:
// a Restoring shard at its next chunk, a Serving one from the start unless
// the last chunk was proposed (only that entry ends a load). It returns
// once the shard serves, or on ctx's end, a refusal (ErrRestoreRefused
// wrapping the group's reason) or chunks' error.
func (s *Server) RestoreShard(ctx context.Context, num uint64, shard int, chunks RestoreChunks) error {
	b := rpc.NewBackoff(20*time.Millisecond, time.Second)
	from := uint64(0)
	for {
		lastProposed := false
		var perr error // the failed proposal's error
		propose := func(chunk uint64, c *grouppb.ShardChunk) error {
			lastProposed = lastProposed || c.GetLast()
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			perr = s.propose(pctx, &grouppb.Command{Op: &grouppb.Command_Restore{Restore: &grouppb.InsertShard{
				ConfigNum: num, Shard: uint32(shard), Chunk: chunk, Kvs: c.GetKvs(), Sessions: c.GetSessions(), Last: c.GetLast()}}})
			return perr
		}
		err := func() error {
			if from == 0 {
				if err := propose(0, &grouppb.ShardChunk{}); err != nil {
					return err
				}
				from = 1
			}
			return chunks(from, propose)
		}()
		switch {
		case err == nil:
			return nil
		case perr == nil || !errors.Is(err, perr):
			return err // the backup's own (a damaged file): not retried
		case errors.Is(perr, group.ErrNotEmpty), errors.Is(perr, kvpb.ErrWrongGroup), errors.Is(perr, rpcerr.ErrMalformed):
			return fmt.Errorf("%w: group %d shard %d: %w", ErrRestoreRefused, s.cfg.GID, shard, perr)
		case ctx.Err() != nil:
			return fmt.Errorf("restore group %d shard %d: %w (last error: %w)", s.cfg.GID, shard, ctx.Err(), err)
		}
		// Unknown outcome, or a chunk out of order (an earlier attempt's
		// entry applied after all): see where the group is.
		_ = rpc.Wait(ctx, b)
		rctx, cancel := context.WithTimeout(ctx, rpc.DeadPeerTimeout)
		rerr := s.node.ReadIndex(rctx)
		cancel()
		if rerr != nil {
			from = 0 // unknown; starting over is safe while Restoring
			continue
		}
		if at := s.sm.ConfigNum(); at != num {
			return fmt.Errorf("%w: group %d is at configuration %d, the restore at %d (last error: %w)", ErrRestoreRefused, s.cfg.GID, at, num, err)
		}
		switch st, next := s.sm.RestoreProgress(shard); {
		case st == group.Restoring:
			from = next
		case st == group.Serving && lastProposed:
			return nil // only the last chunk ends a load
		case st == group.Serving:
			from = 0
		default:
			return fmt.Errorf("%w: group %d shard %d is %s (last error: %w)", ErrRestoreRefused, s.cfg.GID, shard, st, err)
		}
		s.log.Info("restore resumes", "shard", shard, "chunk", from, "after", err)
	}
}
