package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/controller"
	"github.com/shardkv/shardkv/internal/rpc"
)

// Shardkv is the backend of a shardkv cluster, through the public client.
type Shardkv struct {
	c    *client.Client
	pool *rpc.Pool // to ask replicas for their status
}

// NewShardkv connects to the cluster whose controller is at controllers,
// with extra dial options (TLS credentials) over rpc.DialOptions.
func NewShardkv(ctx context.Context, controllers []string, dial ...grpc.DialOption) (*Shardkv, error) {
	c, err := client.New(ctx, controllers, client.WithDialOptions(rpc.DialOptions(dial...)...))
	if err != nil {
		return nil, err
	}
	return &Shardkv{c: c, pool: rpc.NewPool(rpc.DialOptions(dial...)...)}, nil
}

func (s *Shardkv) Name() string { return "shardkv" }

func (s *Shardkv) Get(ctx context.Context, key []byte) error {
	_, err := s.c.Get(ctx, key)
	return err
}

func (s *Shardkv) Put(ctx context.Context, key, value []byte) error {
	_, err := s.c.Put(ctx, key, value)
	return err
}

func (s *Shardkv) Append(ctx context.Context, key, value []byte) error {
	_, err := s.c.Append(ctx, key, value)
	return err
}

func (s *Shardkv) Close() error {
	_ = s.pool.Close()
	return s.c.Close()
}

// Etcd is the backend of an etcd cluster: linearizable gets (etcd's
// default) and puts through the official v3 client.
type Etcd struct {
	c *clientv3.Client // every endpoint: failover probes
	// load are the clients operations go through, round robin: with
	// conns > 0, that many connections to the leader alone, the way
	// etcd's own benchmark tool is run for its best numbers (a follower
	// would forward every put to the leader, costing etcd CPU the
	// comparison must not charge it); otherwise c.
	load []*clientv3.Client
	next atomic.Uint64
}

// NewEtcd connects to the etcd members at endpoints and, with conns > 0,
// opens conns connections to their leader for the load.
func NewEtcd(ctx context.Context, endpoints []string, conns int) (*Etcd, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("connect etcd: %w", err)
	}
	e := &Etcd{c: c, load: []*clientv3.Client{c}}
	if conns <= 0 {
		return e, nil
	}
	leader, err := e.Leader(ctx)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	e.load = nil
	for range conns {
		lc, err := clientv3.New(clientv3.Config{Endpoints: []string{leader}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			_ = e.Close()
			return nil, fmt.Errorf("connect etcd leader %s: %w", leader, err)
		}
		e.load = append(e.load, lc)
	}
	return e, nil
}

func (e *Etcd) Name() string { return "etcd" }

func (e *Etcd) client() *clientv3.Client {
	return e.load[e.next.Add(1)%uint64(len(e.load))]
}

func (e *Etcd) Get(ctx context.Context, key []byte) error {
	_, err := e.client().Get(ctx, string(key))
	return err
}

func (e *Etcd) Put(ctx context.Context, key, value []byte) error {
	_, err := e.client().Put(ctx, string(key), string(value))
	return err
}

// Append is not an etcd operation (a read-modify-write transaction would
// measure something else).
func (e *Etcd) Append(context.Context, []byte, []byte) error { return ErrUnsupported }

func (e *Etcd) Close() error {
	for _, lc := range e.load {
		if lc != e.c {
			_ = lc.Close()
		}
	}
	return e.c.Close()
}

// Leader returns the address of the leader of the group serving key.
func (s *Shardkv) Leader(ctx context.Context, key []byte) (string, error) {
	cfg := s.c.Config()
	gid := cfg.Shards[controller.ShardOf(key, len(cfg.Shards))]
	for _, addr := range cfg.Groups[gid] {
		conn, err := s.pool.Get(addr)
		if err != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := kvpb.NewKVClient(conn).Status(rctx, &kvpb.StatusRequest{Group: gid}, grpc.WaitForReady(true))
		cancel()
		if err == nil && st.GetLeader() == st.GetReplica() {
			return addr, nil
		}
	}
	return "", fmt.Errorf("no leader found for group %d", gid)
}

// Leader returns the endpoint of the etcd leader.
func (e *Etcd) Leader(ctx context.Context) (string, error) {
	for _, ep := range e.c.Endpoints() {
		st, err := e.c.Status(ctx, ep)
		if err == nil && st.Leader == st.Header.MemberId {
			return ep, nil
		}
	}
	return "", fmt.Errorf("no etcd leader found")
}

// FirstWrite retries a put of key, each attempt bounded by attempt, until
// one succeeds, and returns how long that took.
func FirstWrite(ctx context.Context, b Backend, key []byte, attempt time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := b.Put(actx, key, []byte("x"))
		cancel()
		if err == nil {
			return time.Since(start), nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
}
