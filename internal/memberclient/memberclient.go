// Package memberclient calls a group's Membership service (api/memberpb)
// on its replicas: the CLI's `admin member` and the nemesis use it.
package memberclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/rpc"
)

// ErrOutcomeUnknown: an attempt of a change was cut (its replica died, or
// the call timed out) and may have been applied: list the members to
// learn it.
var ErrOutcomeUnknown = errors.New("membership change outcome unknown")

// At asks the replica at addr for group's membership as it applied it,
// within timeout.
func At(ctx context.Context, pool *rpc.Pool, addr string, group uint64, timeout time.Duration) (*memberpb.ListReply, error) {
	return call(ctx, pool, addr, timeout, func(ctx context.Context, conn *grpc.ClientConn) (*memberpb.ListReply, error) {
		return memberpb.NewMembershipClient(conn).List(ctx, &memberpb.ListRequest{Group: group})
	})
}

// ErrNotANode: the server asked answered that it serves no such API
// (gRPC Unimplemented): a controller, or another program, where a node (or
// a group's replica) was expected.
var ErrNotANode = errors.New("memberclient: not a shardkv node")

// call makes one call (fn) to the server at addr within timeout, its error
// decoded by memberpb's table.
func call[T any](ctx context.Context, pool *rpc.Pool, addr string, timeout time.Duration, fn func(context.Context, *grpc.ClientConn) (T, error)) (T, error) {
	conn, err := pool.Get(addr)
	if err != nil {
		var none T
		return none, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := fn(ctx, conn)
	if status.Code(err) == codes.Unimplemented {
		return reply, fmt.Errorf("%w: %s does not serve it (a controller, or another program?)", ErrNotANode, addr)
	}
	return reply, memberpb.Errors.FromStatus(err)
}

// List asks the replicas at addrs in turn and returns the first answer of
// the group's leader (with every member's progress), or else the last
// other answer (reply.FromLeader false), or else the last error.
func List(ctx context.Context, pool *rpc.Pool, group uint64, addrs []string, timeout time.Duration) (*memberpb.ListReply, error) {
	var some *memberpb.ListReply
	var last error = fmt.Errorf("group %d: no replica to ask", group)
	for _, addr := range addrs {
		reply, err := At(ctx, pool, addr, group, timeout)
		switch {
		case err != nil:
			last = err
		case reply.GetFromLeader():
			return reply, nil
		default:
			some = reply
		}
	}
	if some != nil {
		return some, nil
	}
	return nil, last
}

// Change makes one pass of req over the replicas at addrs, each attempt
// within timeout, and goes next to the leader a NOT_LEADER names (at the
// address leaderAddr gives for it, or else at the address it names). It
// returns the first answer, a refusal at once (the change is certainly not
// applied), or else an error wrapping ErrOutcomeUnknown if an attempt may
// have been applied, or the last one (nobody leads, nobody answers).
func Change(ctx context.Context, pool *rpc.Pool, req *memberpb.ChangeRequest, addrs []string, timeout time.Duration,
	leaderAddr func(id uint64) string) (*memberpb.ListReply, error) {
	targets := append([]string(nil), addrs...)
	tried := map[string]bool{}
	var last, unknown error
	for i := 0; i < len(targets) && ctx.Err() == nil; i++ {
		if tried[targets[i]] {
			continue
		}
		tried[targets[i]] = true
		conn, err := pool.Get(targets[i])
		if err != nil {
			last = err
			continue
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		reply, err := memberpb.NewMembershipClient(conn).Change(actx, req)
		cancel()
		if err == nil {
			return reply, nil
		}
		last = memberpb.Errors.FromStatus(err)
		if !rpcerr.Retryable(err) {
			return nil, last // a refusal
		}
		if !rpcerr.CertainlyNotApplied(last) && !rpc.Refused(err) && unknown == nil {
			unknown = fmt.Errorf("%s: %w", targets[i], last)
		}
		var nl *rpcerr.NotLeaderError
		if errors.As(last, &nl) && nl.Leader != 0 {
			to := nl.Addr
			if leaderAddr != nil {
				if a := leaderAddr(nl.Leader); a != "" {
					to = a
				}
			}
			if to != "" && !tried[to] {
				targets = append(targets[:i+1], append([]string{to}, targets[i+1:]...)...)
			}
		}
	}
	if unknown != nil {
		return nil, fmt.Errorf("%w: %w (then: %v)", ErrOutcomeUnknown, unknown, last)
	}
	return nil, last
}

// Host asks the node at addr to host the replica req names
// (memberpb.Node's Host): req.Members are the group's members as its
// leader lists them (or, with req.Create, the new group's founders), this
// replica at addr included. The node first asks the group's members,
// which may take seconds: timeout bounds the whole call. Refusals are
// memberpb's sentinels; a call cut by the timeout may have started the
// replica (host it again to learn: hosting a replica already hosted
// answers the node's list).
func Host(ctx context.Context, pool *rpc.Pool, addr string, req *memberpb.HostRequest, timeout time.Duration) (*memberpb.HostReply, error) {
	return call(ctx, pool, addr, timeout, func(ctx context.Context, conn *grpc.ClientConn) (*memberpb.HostReply, error) {
		return memberpb.NewNodeClient(conn).Host(ctx, req)
	})
}

// Unhost asks the node at addr to stop and delete its replica of group
// (memberpb.Node's Unhost), within timeout; the node first checks that the
// replica is no longer needed, which may ask the group's members and the
// controller. It returns the node's replicas after. Refusals are
// memberpb's sentinels (ErrStillMember); a call cut by the timeout may
// have dropped it (unhost again to learn: a node hosting nothing of the
// group answers its list).
func Unhost(ctx context.Context, pool *rpc.Pool, addr string, group uint64, timeout time.Duration) (*memberpb.HostReply, error) {
	return call(ctx, pool, addr, timeout, func(ctx context.Context, conn *grpc.ClientConn) (*memberpb.HostReply, error) {
		return memberpb.NewNodeClient(conn).Unhost(ctx, &memberpb.UnhostRequest{Group: group})
	})
}

// Hosting asks the node at addr which replica of group it hosts (or has
// recorded) and how the group was founded as that replica knows it
// (memberpb.Node's Hosting), within timeout.
func Hosting(ctx context.Context, pool *rpc.Pool, addr string, group uint64, timeout time.Duration) (*memberpb.HostingReply, error) {
	return call(ctx, pool, addr, timeout, func(ctx context.Context, conn *grpc.ClientConn) (*memberpb.HostingReply, error) {
		return memberpb.NewNodeClient(conn).Hosting(ctx, &memberpb.HostingRequest{Group: group})
	})
}
