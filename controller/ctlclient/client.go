// Package ctlclient is the Go client of the shard controller. It finds the
// leader among the controller replicas, retries with backoff within the
// caller's deadline, and tags every change with its session (client id,
// sequence number) so a retried change is applied once.
//
// The usual calls: New, then Join, Leave and Move to change the
// configuration, Query for a linearizable read, Newer or Watch to follow
// changes. See ExampleClient.
package ctlclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/session"
)

// attemptTimeout bounds one RPC to one replica, so a dead replica costs a
// bounded wait before the next one is tried.
const attemptTimeout = time.Second

// Errors returned by the client.
var (
	// ErrNoAddresses is returned by New without controller addresses.
	ErrNoAddresses = errors.New("ctlclient: no controller addresses")
	// ErrUnknownOutcome: a change may or may not have been applied (an
	// attempt may have reached the log before the call failed). It will
	// not be applied twice; query the configuration to learn its fate.
	// client.ErrUnknownOutcome is its counterpart for writes.
	ErrUnknownOutcome = errors.New("ctlclient: change outcome unknown")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("ctlclient: client closed")
)

// Client talks to a controller cluster. It is safe for concurrent use;
// changes from one Client are applied in the order they were called.
type Client struct {
	pool   *rpc.Pool
	leader atomic.Int32 // index of the replica believed to lead
	id     uint64

	// The controller replicas: those given to New, and leaders their
	// NOT_LEADER answers named that were not among them (a replica that
	// replaced one), at most maxLearned more.
	mu      sync.RWMutex
	addrs   []string
	clients []controllerpb.ControllerClient
	given   int // how many addresses New had

	suspects rpc.Suspects // replicas that let an attempt time out, tried last

	feedMu sync.Mutex
	feed   feed // Newer's shared long poll

	// ctx ends on Close: the shared long poll's.
	ctx    context.Context
	cancel context.CancelFunc

	// changing is held while a change is in flight (one at a time, so
	// sequence numbers only grow); a caller waits for it only as long as
	// its ctx allows.
	changing *semaphore.Weighted
	seq      uint64
	opened   bool // the session is open at the controller (OpenSession applied)
}

// New connects (lazily) to the controller replicas at addrs. dial comes
// after the shared options (rpc.DialOptions: plaintext, keepalive, limits,
// fixed flow-control windows), which it overrides: pass TLS credentials
// to secure the connections.
func New(addrs []string, dial ...grpc.DialOption) (*Client, error) {
	if len(addrs) == 0 {
		return nil, ErrNoAddresses
	}
	c := &Client{addrs: slices.Clone(addrs), given: len(addrs), pool: rpc.NewPool(rpc.DialOptions(dial...)...), id: session.NewID(),
		changing: semaphore.NewWeighted(1)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	for _, a := range addrs {
		conn, err := c.pool.Get(a)
		if err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("dial controller %s: %w", a, err)
		}
		c.clients = append(c.clients, controllerpb.NewControllerClient(conn))
	}
	return c, nil
}

// Close releases the connections.
func (c *Client) Close() error {
	c.cancel()
	return c.pool.Close()
}

// maxLearned bounds the controller addresses a Client adds to those it
// was given (see next).
const maxLearned = 8

// replica returns the replica believed to lead and its index.
func (c *Client) replica() (int, controllerpb.ControllerClient) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	i := int(c.leader.Load()) % len(c.clients)
	return i, c.clients[i]
}

// addr is the address of replica i.
func (c *Client) addr(i int) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.addrs[i]
}

// size is the number of controller replicas the client knows.
func (c *Client) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.clients)
}

// next moves on from replica i after a failed attempt: to the leader err
// names (added to the known replicas if it was not among them: the
// controller's membership changed), else to the following replica, unless
// that one is suspected (see rpc.Suspects) and the call has replicas left
// to try (tried: the replicas the call's attempts went to, updated).
// Another caller may have moved on already.
func (c *Client) next(i int, err error, tried map[int]bool) {
	c.mu.Lock()
	to := (i + 1) % len(c.clients)
	var nl *rpcerr.NotLeaderError
	if errors.As(err, &nl) && nl.Addr != "" {
		j := slices.Index(c.addrs, nl.Addr)
		if j < 0 && len(c.addrs) < c.given+maxLearned {
			if conn, err := c.pool.Get(nl.Addr); err == nil {
				c.addrs = append(c.addrs, nl.Addr)
				c.clients = append(c.clients, controllerpb.NewControllerClient(conn))
				j = len(c.addrs) - 1
			}
		}
		if j >= 0 {
			to = j
		}
	}
	// A replica that let an attempt time out (a stopped leader that a
	// follower, not yet aware of the election, still names) goes after
	// the replicas this call has not tried. Once the call tried them all,
	// it is tried again only if it is named still when its suspicion has
	// settled (rpc.SettleAfter): a leader that was only slow once must
	// not be shunned while it is the only one that can answer.
	switch j := c.suspects.Pick(c.addrs, to, func(k int) bool { return tried[k] }); {
	case j >= 0:
		to = j
	case c.suspects.Settled(c.addrs[to]):
		clear(tried)
	default:
		to = c.suspects.Pick(c.addrs, to, nil) // round the others again
	}
	tried[to] = true
	c.mu.Unlock()
	c.leader.CompareAndSwap(int32(i), int32(to))
}

// call runs fn against the replica believed to lead, moving on to the next
// on a retryable failure, with backoff once every replica was tried.
func (c *Client) call(ctx context.Context, fn func(context.Context, controllerpb.ControllerClient) error) error {
	b := rpc.NewBackoff(20*time.Millisecond, time.Second)
	tried := map[int]bool{}
	for attempt := 0; ; attempt++ {
		i, cl := c.replica()
		tried[i] = true
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := fn(actx, cl)
		timedOut := rpc.AttemptTimedOut(ctx, actx, err)
		cancel()
		if err == nil {
			c.suspects.Answered(c.addr(i))
			return nil
		}
		if timedOut {
			c.suspects.TimedOut(c.addr(i))
		}
		retry := rpcerr.Retryable(err)
		err = controllerpb.Errors.FromStatus(err)
		if !retry || ctx.Err() != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
			}
			return err
		}
		c.next(i, err, tried)
		if (attempt+1)%c.size() == 0 && rpc.Wait(ctx, b) != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
	}
}

// ask makes the call fn with run (Client.call for the leader, or
// Client.longPoll for any replica) and returns the reply of the attempt
// that ended it.
func ask[R any](ctx context.Context, run func(context.Context, func(context.Context, controllerpb.ControllerClient) error) error,
	fn func(context.Context, controllerpb.ControllerClient) (R, error)) (R, error) {
	var reply R
	err := run(ctx, func(ctx context.Context, cl controllerpb.ControllerClient) error {
		var err error
		reply, err = fn(ctx, cl)
		return err
	})
	return reply, err
}

func (c *Client) change(ctx context.Context, fn func(context.Context, controllerpb.ControllerClient, *controllerpb.Session) (*controllerpb.ChangeReply, error)) (config.Config, error) {
	reply, err := inSession(c, ctx, fn)
	if err != nil {
		return config.Config{}, err
	}
	return config.FromProto(reply.GetConfig()), nil
}

// inSession makes the change fn in the client's session: it opens the
// session first, and keeps the sequence number of every attempt of one
// change, so a retried change is applied once.
func inSession[R any](c *Client, ctx context.Context, fn func(context.Context, controllerpb.ControllerClient, *controllerpb.Session) (R, error)) (R, error) {
	var none R
	if err := c.changing.Acquire(ctx, 1); err != nil {
		// Nothing sent: certainly not applied.
		return none, fmt.Errorf("ctlclient: waiting for this client's change in flight: %w", err)
	}
	defer c.changing.Release(1)
	maybe := false // an attempt may have reached the log
	for {
		if !c.opened {
			// Opening changes nothing: its failure proves this change
			// was not applied (unless an attempt in an older session was).
			err := c.call(ctx, func(ctx context.Context, cl controllerpb.ControllerClient) error {
				_, err := cl.OpenSession(ctx, &controllerpb.OpenSessionRequest{ClientId: c.id})
				return err
			})
			if err != nil {
				if maybe {
					return none, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
				}
				return none, err
			}
			c.opened = true
		}
		c.seq++
		sess := &controllerpb.Session{ClientId: c.id, Seq: c.seq}
		reply, err := ask(ctx, c.call, func(ctx context.Context, cl controllerpb.ControllerClient) (R, error) {
			reply, err := fn(ctx, cl, sess)
			if err != nil {
				if e := controllerpb.Errors.FromStatus(err); !rpcerr.CertainlyNotApplied(e) && !errors.Is(e, rpcerr.ErrSessionExpired) {
					maybe = true
				}
			}
			return reply, err
		})
		switch {
		case err == nil:
			return reply, nil
		case errors.Is(err, rpcerr.ErrSessionExpired):
			// The controller forgot this session: continue in a new one.
			c.id, c.seq, c.opened = session.NewID(), 0, false
			if !maybe && ctx.Err() == nil {
				continue // certainly not applied: safe to retry
			}
			return none, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		case maybe && !controllerpb.Refusal(err):
			return none, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		}
		return none, err
	}
}

// Join adds groups (id -> replica addresses) and rebalances. It returns the
// configuration after the change. The controller checks every replica
// first and records each group's incarnation (controllerpb.Group); a join
// refused because a replica states none yet (controllerpb.ErrGroupNotReady:
// just founded, no leader elected, or not applied yet) is sent again until
// ctx ends.
func (c *Client) Join(ctx context.Context, groups map[uint64][]string) (config.Config, error) {
	req := &controllerpb.JoinRequest{}
	ids := make([]uint64, 0, len(groups))
	for id := range groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		req.Groups = append(req.Groups, &controllerpb.Group{Id: id, Addrs: groups[id]})
	}
	b := rpc.NewBackoff(100*time.Millisecond, time.Second)
	for {
		cfg, err := c.change(ctx, func(ctx context.Context, cl controllerpb.ControllerClient, s *controllerpb.Session) (*controllerpb.ChangeReply, error) {
			req.Session = s
			return cl.Join(ctx, req)
		})
		// A group just founded has no incarnation until its first
		// leader's is applied: the refusal changed nothing, and a new
		// request (a new sequence number) is checked again.
		if !errors.Is(err, controllerpb.ErrGroupNotReady) {
			return cfg, err
		}
		if rpc.Wait(ctx, b) != nil {
			return cfg, err
		}
	}
}

// Leave removes groups and rebalances. Removing every group needs force.
// Errors: controllerpb.ErrUnknownGroup, controllerpb.ErrWouldOrphan (every
// group would leave without force), ErrUnknownOutcome.
func (c *Client) Leave(ctx context.Context, gids []uint64, force bool) (config.Config, error) {
	return c.change(ctx, func(ctx context.Context, cl controllerpb.ControllerClient, s *controllerpb.Session) (*controllerpb.ChangeReply, error) {
		return cl.Leave(ctx, &controllerpb.LeaveRequest{Gids: gids, Force: force, Session: s})
	})
}

// SetReplicas sets the replica addresses of group gid after its membership
// changed; its shards stay. The controller checks that every address
// answers as a replica of the group. incarnation is the group's (0:
// unknown): a configuration recording another one for gid refuses the
// change (controllerpb.ErrUnknownGroup).
func (c *Client) SetReplicas(ctx context.Context, gid uint64, addrs []string, incarnation uint64) (config.Config, error) {
	return c.change(ctx, func(ctx context.Context, cl controllerpb.ControllerClient, s *controllerpb.Session) (*controllerpb.ChangeReply, error) {
		return cl.SetReplicas(ctx, &controllerpb.SetReplicasRequest{Gid: gid, Addrs: addrs, Session: s, Incarnation: incarnation})
	})
}

// Move assigns one shard to one group, without rebalancing. Errors:
// controllerpb.ErrUnknownShard, controllerpb.ErrUnknownGroup,
// ErrUnknownOutcome.
func (c *Client) Move(ctx context.Context, shard int, gid uint64) (config.Config, error) {
	if shard < 0 || shard > config.MaxShards {
		return config.Config{}, fmt.Errorf("%w: %d", controllerpb.ErrUnknownShard, shard)
	}
	return c.change(ctx, func(ctx context.Context, cl controllerpb.ControllerClient, s *controllerpb.Session) (*controllerpb.ChangeReply, error) {
		return cl.Move(ctx, &controllerpb.MoveRequest{Shard: uint32(shard), Gid: gid, Session: s})
	})
}

// ClusterID returns the id of the cluster the controllers belong to, as a
// controller replica states it in its response headers. A replica group's
// replica learns it so on its first start. It fails with
// controllerpb.ErrNotInitialized until the controller has a configuration.
func (c *Client) ClusterID(ctx context.Context) (uint64, error) {
	var header metadata.MD
	err := c.call(ctx, func(ctx context.Context, cl controllerpb.ControllerClient) error {
		_, err := cl.Query(ctx, &controllerpb.QueryRequest{Num: -1}, grpc.Header(&header))
		return err
	})
	if err != nil {
		return 0, err
	}
	id, ok := rpc.ReadClusterID(header)
	if !ok {
		return 0, errors.New("ctlclient: the controller did not state its cluster id")
	}
	return id, nil
}

// Query returns configuration n (the latest for n < 0) and the cluster's
// shard count, linearizably.
func (c *Client) Query(ctx context.Context, n int64) (config.Config, int, error) {
	reply, err := ask(ctx, c.call, func(ctx context.Context, cl controllerpb.ControllerClient) (*controllerpb.QueryReply, error) {
		return cl.Query(ctx, &controllerpb.QueryRequest{Num: n})
	})
	if err != nil {
		return config.Config{}, 0, err
	}
	return config.FromProto(reply.GetConfig()), int(reply.GetNumShards()), nil
}

// Watch waits until a configuration numbered above after exists and returns
// the newest one; it may also return an older one when the server's wait
// limit passes first. It is served by any replica, so it is not a
// linearizable read: use Query for that.
func (c *Client) Watch(ctx context.Context, after uint64) (config.Config, error) {
	reply, err := ask(ctx, c.longPoll, func(ctx context.Context, cl controllerpb.ControllerClient) (*controllerpb.QueryReply, error) {
		return cl.Watch(ctx, &controllerpb.WatchRequest{After: after})
	})
	if err != nil {
		return config.Config{}, err
	}
	return config.FromProto(reply.GetConfig()), nil
}

// longPoll runs fn, a long poll any replica answers, moving on to another
// replica whenever one fails.
func (c *Client) longPoll(ctx context.Context, fn func(context.Context, controllerpb.ControllerClient) error) error {
	b := rpc.NewBackoff(50*time.Millisecond, time.Second)
	tried := map[int]bool{}
	for {
		i, cl := c.replica()
		tried[i] = true
		// The server answers within its long-poll limit, or fails at once
		// when it cannot confirm it is current (the controller's Watch): a
		// deadline a little above the limit catches a silent server.
		actx, cancel := context.WithTimeout(ctx, controllerpb.WatchLimit+attemptTimeout)
		err := fn(actx, cl)
		cancel()
		if err == nil {
			return nil
		}
		err = controllerpb.Errors.FromStatus(err)
		if errors.Is(err, rpcerr.ErrAuthFailed) || errors.Is(err, rpcerr.ErrPermissionDenied) {
			return err // every replica would say the same
		}
		// Another replica next: this one is cut off, stopped or silent.
		c.next(i, err, tried)
		if ctx.Err() != nil || rpc.Wait(ctx, b) != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
	}
}

// AuthChange makes one change of the auth state (the request's session is
// the client's) and returns the auth revision after it. Errors: the
// rpcerr auth refusals (ErrUserNotFound, ErrNoAdmin, ...), ErrAuthNeedsTLS,
// ErrPermissionDenied without the admin role, ErrUnknownOutcome.
func (c *Client) AuthChange(ctx context.Context, req *controllerpb.AuthChangeRequest) (uint64, error) {
	reply, err := inSession(c, ctx, func(ctx context.Context, cl controllerpb.ControllerClient, s *controllerpb.Session) (*controllerpb.AuthChangeReply, error) {
		req := proto.Clone(req).(*controllerpb.AuthChangeRequest)
		req.Session = s
		if req.GetUserAdd().GetPassword() != "" || req.GetUserPasswd().GetPassword() != "" {
			reply, err := cl.AuthChange(ctx, req, secretCall)
			return reply, secretRefused(err)
		}
		return cl.AuthChange(ctx, req)
	})
	return reply.GetRevision(), err
}

// Authenticate checks user's password at the controller's leader and
// returns a token (sent as the gRPC metadata "token") and when it
// expires. Errors: rpcerr.ErrAuthFailed, rpcerr.ErrAuthNeedsTLS over
// plaintext (the call requires transport security, so gRPC refuses to
// send the password over plaintext).
func (c *Client) Authenticate(ctx context.Context, user, password string) (token string, expires time.Time, err error) {
	reply, err := ask(ctx, c.call, func(ctx context.Context, cl controllerpb.ControllerClient) (*controllerpb.AuthenticateReply, error) {
		reply, err := cl.Authenticate(ctx, &controllerpb.AuthenticateRequest{Name: user, Password: password}, secretCall)
		return reply, secretRefused(err)
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return reply.GetToken(), time.UnixMilli(reply.GetExpiresUnixMs()), nil
}

// AuthState returns the controller's public auth state: at once, or with
// wait once its revision is above after (or the long poll's limit passed).
func (c *Client) AuthState(ctx context.Context, after uint64, wait bool) (*controllerpb.AuthStateReply, error) {
	return ask(ctx, c.longPoll, func(ctx context.Context, cl controllerpb.ControllerClient) (*controllerpb.AuthStateReply, error) {
		return cl.AuthState(ctx, &controllerpb.AuthStateRequest{After: after, Wait: wait})
	})
}
