// Package client is the Go client of shardkv: the public API.
//
//	c, err := client.New(ctx, []string{"127.0.0.1:7100", "127.0.0.1:7101", "127.0.0.1:7102"})
//	_, err = c.Put(ctx, []byte("greeting"), []byte("hello"))
//	got, err := c.Get(ctx, []byte("greeting")) // got.Value, got.Version, got.Found
//
// # Versions and conditional writes
//
// Every key has a version, as in etcd: 1 when it is created, +1 at every
// put or append; a delete removes the key (version 0), and a later put
// starts again at 1. Get returns it, and every write returns the version
// after it. A write may carry a condition, in the clientv3 style of
// options: IfVersion(n) (0: the key does not exist) or IfValue(v). A
// condition that does not hold is an answer, not an error:
// WriteResult.Succeeded is false and nothing changed. So a
// read-modify-write is
//
//	got, err := c.Get(ctx, key)
//	res, err := c.Put(ctx, key, next(got.Value), client.IfVersion(got.Version))
//	// !res.Succeeded: someone wrote in between; read again and retry.
//
// # Listing
//
// List returns the keys of a range or prefix in byte order, a page at a
// time, with their values and versions (or keys alone), from every shard:
//
//	page, err := c.List(ctx, client.WithPrefix([]byte("user/")), client.WithLimit(100))
//	// page.KVs; while page.More: c.List(ctx, ..., client.After(page.Next))
//
// Each group reads its part of a page at a linearizable point; a page is
// not one snapshot of the whole store (see List for what holds). A
// listing through pages returns no key twice, and every key that existed
// throughout, across shard moves.
//
// # Watches
//
// Watch streams the changes to a key (or WatchPrefix, to the keys under a
// prefix) from now on, each key's exactly once and in version order,
// across leader changes and shard moves; what the servers can no longer
// deliver is reported as a gap (ErrWatchGap), never skipped:
//
//	for resp := range c.Watch(ctx, []byte("config/"), client.WatchPrefix()) {
//		if resp.Gap != nil { /* re-read the keys of resp.GapShard */ }
//		for _, ev := range resp.Events { /* ev.Type, ev.Key, ev.Value, ev.Version */ }
//	}
//
// A Client routes each key to its shard (config.ShardOf), the shard to
// its group by the controller's configuration, and the request to the
// group's leader. It caches the configuration and each group's leader,
// re-reads the configuration when a group answers that it does not own the
// key or when no replica of the group answers, and retries with backoff
// until the context ends.
//
// # Batching
//
// A Client is safe for concurrent use, and meant to be shared: the Gets
// and Writes its goroutines send to one replica of a group while earlier
// ones are on their way leave together, in one KV.Batch call (as TiKV's
// client batches its commands to a store). Nothing waits on a timer: a
// lone request leaves at once. The replica serves each op of a batch as
// if it had come alone, so every caller gets its own answer, error and
// deadline; what batching saves is the per-call cost of gRPC on both
// sides, and on the leader, writes arriving together share raft entries.
// A batch carries copies of its requests: a caller that stopped waiting
// may reuse its key and value at once.
//
// # Exactly once
//
// Every write carries a session (client id, sequence number), and servers
// apply each one at most once. Sessions live in the shard's duplicate table
// and move with it, so a Client keeps a pool of sessions per shard and gives
// each in-flight write its own, so concurrent writes never share a
// sequence. When the context ends while a write may have reached a group
// and its fate is unknown, the write returns ErrUnknownOutcome: it may or
// may not have been applied, but it will never be applied twice.
//
// A session is opened in its shard (one more round trip, once per pooled
// session) before its first write, and the shard forgets it after its TTL
// idle (one hour by default, in replicated time). A write whose session the
// shard no longer knows is refused; the Client then opens a new session and
// retries the write if no earlier attempt of it can have reached a log,
// and returns ErrUnknownOutcome otherwise (it may have been applied before
// the session expired).
//
// # Authentication
//
// On a cluster with auth enabled, WithCredentials (a user and password,
// traded at the controller for tokens renewed before they expire) or
// WithToken authenticate every request; both need WithTLS, as credentials
// never travel in plaintext. A request the user's roles do not allow fails
// with rpcerr.ErrPermissionDenied, bad or revoked credentials with
// rpcerr.ErrAuthFailed; neither is retried, and neither was applied.
//
// All methods are safe for concurrent use.
package client

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/config"
	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/session"
)

// Errors returned by the client. ErrKeyTooLarge, ErrValueTooLarge and
// ErrEmptyKey come from the client's own check before sending (limits:
// WithLimits), or from the servers' check when their limits are lower (or,
// for Append, when the value it would make is too large); either way
// nothing changed.
var (
	// ErrUnknownOutcome: the context ended while a write may have been
	// applied. It will not be applied twice. ctlclient.ErrUnknownOutcome
	// is its counterpart for the controller's changes.
	ErrUnknownOutcome = errors.New("shardkv: write outcome unknown")
	// ErrKeyTooLarge: the key is above the key limit (WithLimits; default
	// 4 KiB); nothing changed.
	ErrKeyTooLarge = kvpb.ErrKeyTooLarge
	// ErrValueTooLarge: the value, or an IfValue condition, is above the
	// value limit (WithLimits; default 1 MiB); nothing changed.
	ErrValueTooLarge = kvpb.ErrValueTooLarge
	// ErrEmptyKey: the key is empty (keys have at least one byte); nothing
	// changed.
	ErrEmptyKey = kvpb.ErrEmptyKey
	// ErrNoSpace: the group's leader cannot persist (its disk is full);
	// the write was not applied. Reads still work.
	ErrNoSpace = rpcerr.ErrNoSpace
	// ErrMalformed: the request is inconsistent (both IfVersion and
	// IfValue); nothing was sent.
	ErrMalformed = rpcerr.ErrMalformed
)

type options struct {
	dial           []grpc.DialOption
	tls            *tls.Config
	attemptTimeout time.Duration
	maxRetry       time.Duration
	limits         limits
	user, password string // WithCredentials
	token          string // WithToken
}

// limits are the size limits checked before sending; zero means the
// default.
type limits struct{ maxKey, maxValue int }

func (l limits) maxKeyBytes() int {
	return cmp.Or(l.maxKey, kvpb.DefaultMaxKeySize)
}

func (l limits) maxValueBytes() int {
	if l.maxValue == 0 {
		return kvpb.DefaultMaxValueSize
	}
	return l.maxValue
}

func (l limits) check(op kvpb.WriteOp, key, value []byte) error {
	if l.maxKey == 0 {
		l.maxKey = kvpb.DefaultMaxKeySize
	}
	if l.maxValue == 0 {
		l.maxValue = kvpb.DefaultMaxValueSize
	}
	return kvpb.CheckWrite(op, key, value, l.maxKey, l.maxValue)
}

// Option configures a Client.
type Option func(*options)

// WithDialOptions adds gRPC dial options for every connection, after the
// client's own (plaintext, keepalive, message limits, fixed flow-control
// windows), which they override: pass TLS credentials to secure them.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = opts }
}

// WithTLS makes every connection TLS with cfg: its RootCAs verify the
// servers' certificates (nil: the system's roots), and its Certificates
// (or GetClientCertificate) are the client's certificate, for servers
// started with --client-cert-auth. It applies over WithDialOptions.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) { o.tls = cfg }
}

// WithCredentials authenticates every request as user, with password: the
// client trades them at the controller for a token (valid for minutes)
// and renews it before it expires. They need TLS (WithTLS): they are
// never sent in plaintext. Errors then include rpcerr.ErrAuthFailed and
// rpcerr.ErrPermissionDenied.
func WithCredentials(user, password string) Option {
	return func(o *options) { o.user, o.password = user, password }
}

// WithToken authenticates every request with token (from `shardkv admin
// auth token`), until it expires. It needs TLS, as WithCredentials.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithAttemptTimeout bounds one request to one replica (default 2s).
func WithAttemptTimeout(d time.Duration) Option {
	return func(o *options) { o.attemptTimeout = d }
}

// WithLimits sets the key and value size limits (bytes) the client checks
// before sending (default kvpb.DefaultMaxKeySize and
// kvpb.DefaultMaxValueSize, the servers' defaults). Set them to the
// servers' limits.
func WithLimits(maxKeyBytes, maxValueBytes int) Option {
	return func(o *options) { o.limits = limits{maxKey: maxKeyBytes, maxValue: maxValueBytes} }
}

// WithMaxRetry bounds how long one operation is retried, whatever the
// context (default 5 minutes, well below the servers' session TTL).
func WithMaxRetry(d time.Duration) Option {
	return func(o *options) { o.maxRetry = d }
}

// Client is a connection to one shardkv cluster: it routes every request
// to the leader of the group owning the key's shard and retries across
// leader changes and shard moves. Make one with New, share it between
// goroutines (it is safe for concurrent use and batches their requests),
// and Close it when done.
type Client struct {
	opts  options
	ctl   *ctlclient.Client
	creds *ctlclient.Credentials // nil without WithCredentials or WithToken

	mu        sync.RWMutex
	cfg       config.Config
	numShards int
	leaders   map[uint64]int // group -> index of the replica last seen leading
	pool      *rpc.Pool      // one connection per replica of the current configuration

	sessMu   sync.Mutex
	sessions map[int][]*pooledSession // idle sessions by shard

	latency latency

	suspects rpc.Suspects // replicas that let an attempt time out, tried last

	batchMu  sync.Mutex
	batchers map[batchKey]*batcher // each replica's Gets and Writes, batched per group
}

// latency follows how long successful attempts take, to bound a first
// attempt at a small multiple of it.
type latency struct {
	mu   sync.Mutex
	ewma time.Duration
}

// minHedge bounds a first attempt from below: shorter, and ordinary
// hiccups (a GC pause, a loaded machine) would send requests around.
const minHedge = 300 * time.Millisecond

func (l *latency) observe(d time.Duration) {
	l.mu.Lock()
	if l.ewma == 0 {
		l.ewma = d
	}
	l.ewma += (d - l.ewma) / 8
	l.mu.Unlock()
}

// hedge returns the timeout of a first attempt: ten times the usual
// latency, at least minHedge, at most full.
func (l *latency) hedge(full time.Duration) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return min(full, max(minHedge, 10*l.ewma))
}

type pooledSession struct {
	id, seq uint64
	open    bool // opened in its shard (WRITE_OP_OPEN_SESSION applied)
}

// New connects to the cluster whose controller replicas are at
// controllerAddrs and reads the current configuration. ctx bounds only
// this first read; while the controller is not initialized yet (a cluster
// starting) New waits, until ctx ends. It fails with
// ctlclient.ErrNoAddresses without addresses, and with the configuration
// read's error wrapped as "read configuration: %w" (for instance
// controllerpb.ErrNotInitialized once ctx ends, rpcerr.ErrAuthFailed with
// bad credentials). Options default to: attempt timeout 2 s, retries for 5
// minutes, limits kvpb.DefaultMaxKeySize and kvpb.DefaultMaxValueSize,
// plaintext.
func New(ctx context.Context, controllerAddrs []string, opts ...Option) (*Client, error) {
	o := options{attemptTimeout: 2 * time.Second, maxRetry: 5 * time.Minute}
	for _, fn := range opts {
		fn(&o)
	}
	o.dial = rpc.DialOptions(o.dial...)
	if o.tls != nil {
		o.dial = append(slices.Clip(o.dial), rpc.WithTLS(o.tls))
	}
	var creds *ctlclient.Credentials
	switch {
	case o.user != "":
		var err error
		if creds, err = ctlclient.NewCredentials(controllerAddrs, o.user, o.password, o.dial...); err != nil {
			return nil, err
		}
	case o.token != "":
		creds = ctlclient.TokenCredentials(o.token)
	}
	if creds != nil {
		o.dial = append(slices.Clip(o.dial), grpc.WithPerRPCCredentials(creds))
	}
	ctl, err := ctlclient.New(controllerAddrs, o.dial...)
	if err != nil {
		return nil, err
	}
	c := &Client{opts: o, ctl: ctl, creds: creds, leaders: map[uint64]int{}, pool: rpc.NewPool(o.dial...)}
	b := rpc.NewBackoff(50*time.Millisecond, time.Second)
	for {
		err := c.refresh(ctx)
		if err == nil {
			return c, nil
		}
		// A controller that is not initialized yet (a cluster starting)
		// is waited for; anything else is the caller's to see.
		if !errors.Is(err, controllerpb.ErrNotInitialized) || rpc.Wait(ctx, b) != nil {
			_ = c.Close()
			return nil, fmt.Errorf("read configuration: %w", err)
		}
	}
}

// Close releases the client's connections.
func (c *Client) Close() error {
	_ = c.pool.Close()
	if c.creds != nil {
		_ = c.creds.Close()
	}
	return c.ctl.Close()
}

// Config returns the configuration the client currently routes by.
func (c *Client) Config() config.Config {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cfg.Clone()
}

// refresh re-reads the latest configuration.
func (c *Client) refresh(ctx context.Context) error {
	cfg, n, err := c.ctl.Query(ctx, -1)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if cfg.Num >= c.cfg.Num || c.numShards == 0 {
		c.cfg, c.numShards = cfg, n
	}
	cur := c.cfg
	c.mu.Unlock()
	// Connections to replicas that are no longer in the configuration
	// (groups that left) are closed.
	c.pool.Retain(func(addr string) bool {
		for _, addrs := range cur.Groups {
			if slices.Contains(addrs, addr) {
				return true
			}
		}
		return false
	})
	return nil
}

// A target is the group an attempt goes to: its id, its replicas, and the
// index of the one last seen leading.
type target struct {
	gid   uint64
	addrs []string
	first int
}

// targetOf returns the target of group gid by the current configuration;
// the caller holds c.mu.
func (c *Client) targetOf(gid uint64) target {
	return target{gid: gid, addrs: c.cfg.Groups[gid], first: c.leaders[gid]}
}

// keyRoute routes to the group that owns key's shard.
func (c *Client) keyRoute(key []byte) func() (target, error) {
	return func() (target, error) {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return c.targetOf(c.cfg.Shards[config.ShardOf(key, c.numShards)]), nil
	}
}

func (c *Client) kv(addr string) (kvpb.KVClient, error) {
	conn, err := c.pool.Get(addr)
	if err != nil {
		return nil, err
	}
	return c.batchKV(conn), nil
}

// batchKV returns the KV client of conn whose Gets and Writes are batched
// per group (batch.go).
func (c *Client) batchKV(conn *grpc.ClientConn) kvpb.KVClient {
	return batchKV{KVClient: kvpb.NewKVClient(conn), batcher: func(gid uint64) *batcher {
		c.batchMu.Lock()
		defer c.batchMu.Unlock()
		key := batchKey{conn, gid}
		b, ok := c.batchers[key]
		if !ok {
			if c.batchers == nil {
				c.batchers = map[batchKey]*batcher{}
			}
			for old, ob := range c.batchers {
				if ob.closed() {
					delete(c.batchers, old) // a replica that left
				}
			}
			b = newBatcher(conn)
			c.batchers[key] = b
		}
		return b
	}}
}

// batchKey names a batcher: a connection and a group.
type batchKey struct {
	conn *grpc.ClientConn
	gid  uint64
}

// leaderHint returns the index in addrs of the leader a NOT_LEADER refusal
// named, or -1.
func leaderHint(err error, addrs []string) int {
	var nl *rpcerr.NotLeaderError
	if !errors.As(err, &nl) || nl.Addr == "" {
		return -1
	}
	return slices.Index(addrs, nl.Addr)
}

func (c *Client) sawLeader(gid uint64, i int) {
	c.mu.Lock()
	c.leaders[gid] = i
	c.mu.Unlock()
}

// takeSession returns an idle session of shard, or a new one.
func (c *Client) takeSession(shard int) *pooledSession {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	if n := len(c.sessions[shard]); n > 0 {
		s := c.sessions[shard][n-1]
		c.sessions[shard] = c.sessions[shard][:n-1]
		return s
	}
	return &pooledSession{id: session.NewID()}
}

func (c *Client) returnSession(shard int, s *pooledSession) {
	c.sessMu.Lock()
	if c.sessions == nil {
		c.sessions = map[int][]*pooledSession{}
	}
	c.sessions[shard] = append(c.sessions[shard], s)
	c.sessMu.Unlock()
}

// verdict classifies one failed attempt.
type verdict int

const (
	nextReplica  verdict = iota // try another replica of the group
	rereadConfig                // the group does not own the key (any more)
	waitAndRetry                // the shard is arriving: try again soon
	final                       // a definitive answer for the caller
)

func classify(err error) verdict {
	switch {
	case errors.Is(err, kvpb.ErrWrongGroup), errors.Is(err, kvpb.ErrStaleConfig):
		return rereadConfig
	case errors.Is(err, kvpb.ErrNotReady):
		return waitAndRetry
	case errors.Is(err, kvpb.ErrKeyTooLarge), errors.Is(err, kvpb.ErrValueTooLarge),
		errors.Is(err, kvpb.ErrEmptyKey), errors.Is(err, rpcerr.ErrMalformed), errors.Is(err, rpcerr.ErrStaleRequest),
		errors.Is(err, rpcerr.ErrSessionExpired), errors.Is(err, rpcerr.ErrNoSpace),
		// Every replica enforces the same auth state (within its bound).
		errors.Is(err, rpcerr.ErrAuthFailed), errors.Is(err, rpcerr.ErrPermissionDenied), errors.Is(err, rpcerr.ErrAuthNeedsTLS):
		return final
	}
	return nextReplica
}

// gaveUp is the error of an operation whose context ended: the context's
// error, and the last attempt's, both matchable with errors.Is.
func gaveUp(ctx context.Context, last error) error {
	if last == nil {
		return ctx.Err()
	}
	return fmt.Errorf("%w (last error: %w)", ctx.Err(), last)
}

// deterministicRefusal reports whether err depends only on the request
// itself, so every attempt of it got (or will get, at apply) the same.
func deterministicRefusal(err error) bool {
	return errors.Is(err, kvpb.ErrKeyTooLarge) || errors.Is(err, kvpb.ErrValueTooLarge) ||
		errors.Is(err, kvpb.ErrEmptyKey) || errors.Is(err, rpcerr.ErrMalformed)
}

// tooLarge turns gRPC's refusal of a message above its receive limit
// (ResourceExhausted without one of the service's reasons) into
// ErrValueTooLarge: the server never decoded the request.
func tooLarge(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.ResourceExhausted {
		return fmt.Errorf("%w: %s", ErrValueTooLarge, st.Message())
	}
	return err
}

// definitelyNotApplied reports whether a failed write attempt certainly
// did not reach the log.
func definitelyNotApplied(err error) bool {
	return rpcerr.CertainlyNotApplied(err) || errors.Is(err, kvpb.ErrWrongGroup) || errors.Is(err, kvpb.ErrNotReady) ||
		errors.Is(err, rpcerr.ErrSessionExpired)
}

// do runs attempt against the key's group until it succeeds, fails
// definitively, or ctx ends. maybeApplied is set once an attempt of a write
// may have reached a log without a definitive answer.
// attempt gets the group it is for, which every request names (a node
// hosts replicas of several groups at one address).
func (c *Client) do(ctx context.Context, key []byte, attempt func(ctx context.Context, kv kvpb.KVClient, gid uint64) error) (maybeApplied bool, err error) {
	return c.doRouted(ctx, c.keyRoute(key), true, attempt)
}

// doRouted runs attempt against the group route names, as do, asking route
// again at every round (after a configuration is re-read, it may name
// another group); an error of route ends it. hedged cuts each replica's
// first attempt short (latency.hedge) and follows the attempts' latency:
// for requests of the usual, small size.
func (c *Client) doRouted(ctx context.Context, route func() (target, error), hedged bool, attempt func(ctx context.Context, kv kvpb.KVClient, gid uint64) error) (maybeApplied bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.maxRetry)
	defer cancel()
	b := rpc.NewBackoff(10*time.Millisecond, 250*time.Millisecond)
	op := &routedOp{c: c, hedged: hedged, attempt: attempt}
	for round := 0; ; round++ {
		t, err := route()
		if err != nil {
			return op.maybeApplied, err
		}
		if t.gid == 0 || len(t.addrs) == 0 {
			op.last = fmt.Errorf("no group serves the key's shard in configuration %d", c.Config().Num)
		}
		done, reread, err := op.round(ctx, t, round)
		if done {
			return op.maybeApplied, err
		}
		if rpc.Wait(ctx, b) != nil {
			return op.maybeApplied, gaveUp(ctx, op.last)
		}
		// The configuration is re-read when a group said it does not own
		// the key, and after a few rounds without an answer (the group may
		// have moved or changed replicas).
		if reread || len(t.addrs) == 0 || round >= 3 {
			before := c.Config().Num
			rctx, rcancel := context.WithTimeout(ctx, c.opts.attemptTimeout)
			if err := c.refresh(rctx); err == nil && c.Config().Num != before {
				b.Reset() // a new configuration: its groups get prompt attempts
			}
			rcancel()
		}
	}
}

// routedOp is one operation of doRouted: what it runs, and what its
// attempts so far left.
type routedOp struct {
	c       *Client
	hedged  bool
	attempt func(ctx context.Context, kv kvpb.KVClient, gid uint64) error
	// maybeApplied is set once an attempt of a write may have reached a
	// log without a definitive answer.
	maybeApplied bool
	last         error // the last attempt's
}

// round tries the replicas of t, each at most once, until one answers, or
// the group is to be tried again later. done is set when the operation is
// over, with its error; reread when the group said it does not own the
// key.
func (op *routedOp) round(ctx context.Context, t target, round int) (done, reread bool, err error) {
	c := op.c
	gid, addrs, next := t.gid, t.addrs, t.first
	tried := make([]bool, len(addrs))
	for i := 0; i < len(addrs); i++ {
		// A replica that let an attempt time out (a stopped leader)
		// goes after those not yet tried that did not.
		// If only suspects are left untried, the round ends.
		idx := c.suspects.Pick(addrs, next%len(addrs), func(i int) bool { return tried[i] })
		if idx < 0 {
			break
		}
		tried[idx] = true
		next = idx + 1
		kv, err := c.kv(addrs[idx])
		if err != nil {
			op.last = err
			continue
		}
		err = op.try(ctx, kv, gid, addrs[idx], round)
		if err == nil {
			c.suspects.Answered(addrs[idx])
			c.sawLeader(gid, idx)
			return true, false, nil
		}
		op.last = err
		if !definitelyNotApplied(err) {
			op.maybeApplied = true
		}
		if hint := leaderHint(err, addrs); hint >= 0 {
			next = hint // the replica named the leader: no need to probe
		}
		switch classify(err) {
		case final:
			c.sawLeader(gid, idx)
			return true, false, err
		case rereadConfig:
			return false, true, nil
		case waitAndRetry:
			c.sawLeader(gid, idx)
			return false, false, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return false, false, nil
}

// try runs one attempt against the replica at addr (kv) of group gid, in
// the given round, and returns its error as the service's.
func (op *routedOp) try(ctx context.Context, kv kvpb.KVClient, gid uint64, addr string, round int) error {
	// The first round gives each replica a short attempt (a stopped or
	// cut-off replica costs little; any replica serves); each later round
	// twice the last, up to the full one (a loaded cluster may be slow),
	// so that an election that outlasts the first round does not make the
	// next attempt at the stopped leader a full one.
	timeout := op.c.opts.attemptTimeout
	if op.hedged {
		timeout = min(timeout, op.c.latency.hedge(timeout)<<min(round, 8))
	}
	actx, acancel := context.WithTimeout(ctx, timeout)
	start := time.Now()
	err := op.attempt(actx, kv, gid)
	timedOut := rpc.AttemptTimedOut(ctx, actx, err)
	acancel()
	if err == nil {
		if op.hedged {
			op.c.latency.observe(time.Since(start))
		}
		return nil
	}
	if timedOut {
		op.c.suspects.TimedOut(addr)
	}
	return tooLarge(kvpb.Errors.FromStatus(err))
}

// GetResult is a key as Get read it.
type GetResult struct {
	// Value is the key's value: nil when Found is false (an empty value
	// may be nil too: test Found).
	Value []byte
	// Version is the key's version (1 at creation, +1 per put or append),
	// 0 when it does not exist.
	Version uint64
	// Found is whether the key exists.
	Found bool
}

// Get returns key's value and version, linearizably; Found is false (and
// Version 0) when the key does not exist. It fails with ErrEmptyKey or
// ErrKeyTooLarge before sending, and otherwise, once ctx ends or
// WithMaxRetry passes, with the last error (rpcerr.ErrPermissionDenied and
// rpcerr.ErrAuthFailed are not retried).
func (c *Client) Get(ctx context.Context, key []byte) (GetResult, error) {
	if err := c.opts.limits.check(kvpb.WriteOp_WRITE_OP_DELETE, key, nil); err != nil {
		return GetResult{}, err
	}
	var reply *kvpb.GetReply
	_, err := c.do(ctx, key, func(ctx context.Context, kv kvpb.KVClient, gid uint64) error {
		var err error
		reply, err = kv.Get(ctx, &kvpb.GetRequest{Key: key, Group: gid})
		return err
	})
	if err != nil {
		return GetResult{}, err
	}
	return GetResult{Value: reply.GetValue(), Version: reply.GetVersion(), Found: reply.GetFound()}, nil
}

// WriteResult is the answer to a write.
type WriteResult struct {
	// Succeeded is whether the write was applied: false only when its
	// condition (IfVersion, IfValue) did not hold, and then nothing
	// changed.
	Succeeded bool
	// Version is the key's version after the write: the new one if it
	// succeeded (0 after a delete), the current one otherwise.
	Version uint64
	// Value is the key's value after the write (nil if it does not
	// exist), when the write asked for it (WithValue) and ValueReturned is
	// set. It is not when the servers had already applied this write and
	// answered a retry of it from its session record, which keeps
	// Succeeded and Version but not the value: read the key if you need it
	// (it may have changed since).
	Value []byte
	// ValueReturned says that Value holds the key's value (see Value).
	ValueReturned bool
}

// WriteOption modifies a write: a condition, or asking for the value.
type WriteOption func(*kvpb.WriteRequest)

// IfVersion makes the write conditional: it is applied only if the key's
// version is n at that point (0: the key does not exist). At most one of
// IfVersion and IfValue; both fail with ErrMalformed.
func IfVersion(n uint64) WriteOption {
	return func(w *kvpb.WriteRequest) { w.IfVersion = &n }
}

// IfValue makes the write conditional: it is applied only if the key
// exists and its value equals v (nil and empty alike: an empty value).
func IfValue(v []byte) WriteOption {
	// Never nil: a nil if_value is no condition on the wire.
	return func(w *kvpb.WriteRequest) { w.IfValue = append([]byte{}, v...) }
}

// WithValue asks for the key's value after the write in
// WriteResult.Value (for a write whose condition did not hold: the
// current value).
func WithValue() WriteOption {
	return func(w *kvpb.WriteRequest) { w.ReturnValue = true }
}

func (c *Client) write(ctx context.Context, op kvpb.WriteOp, key, value []byte, opts []WriteOption) (WriteResult, error) {
	cond := &kvpb.WriteRequest{Op: op}
	for _, o := range opts {
		o(cond)
	}
	// Refused before sending, with the servers' own errors: a request the
	// server cannot even receive would otherwise look like a lost one.
	if err := c.opts.limits.check(op, key, value); err != nil {
		return WriteResult{}, err
	}
	if err := kvpb.CheckCondition(cond, c.opts.limits.maxValueBytes()); err != nil {
		return WriteResult{}, err
	}
	c.mu.RLock()
	shard := config.ShardOf(key, c.numShards)
	c.mu.RUnlock()
	for {
		s := c.takeSession(shard)
		if !s.open {
			// Opening changes no data: whatever happens, the write itself
			// certainly was not applied.
			if _, err := c.do(ctx, key, func(ctx context.Context, kv kvpb.KVClient, gid uint64) error {
				// A request of its own per attempt: nothing an attempt sent
				// changes under a later one.
				open := &kvpb.WriteRequest{Op: kvpb.WriteOp_WRITE_OP_OPEN_SESSION, Key: key, ClientId: s.id, Group: gid}
				_, err := kv.Write(ctx, open)
				return err
			}); err != nil {
				return WriteResult{}, err
			}
			s.open = true
		}
		s.seq++
		var reply *kvpb.WriteReply
		maybe, err := c.do(ctx, key, func(ctx context.Context, kv kvpb.KVClient, gid uint64) error {
			var err error
			// A request of its own per attempt (as OPEN_SESSION above).
			req := &kvpb.WriteRequest{Op: op, Key: key, Value: value, ClientId: s.id, Seq: s.seq,
				IfVersion: cond.IfVersion, IfValue: cond.IfValue, ReturnValue: cond.ReturnValue, Group: gid}
			reply, err = kv.Write(ctx, req)
			return err
		})
		switch {
		case err == nil:
			c.returnSession(shard, s)
			return WriteResult{Succeeded: reply.GetSucceeded(), Version: reply.GetVersion(),
				Value: reply.GetValue(), ValueReturned: reply.GetValueReturned()}, nil
		case errors.Is(err, rpcerr.ErrSessionExpired):
			// The shard forgot the session. No attempt was applied twice;
			// unless one may have been applied before it expired, the
			// write certainly was not: retry it in a new session.
			if !maybe && ctx.Err() == nil {
				continue
			}
			return WriteResult{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		case classify(err) == final:
			// A refusal may or may not have been recorded under this
			// sequence number: never reuse the session. Only a refusal
			// that every attempt of this request would get (its size or
			// shape) proves that none of them was applied; any other, after
			// an attempt that may have reached a log, leaves it unknown.
			if errors.Is(err, rpcerr.ErrStaleRequest) || (maybe && !deterministicRefusal(err)) {
				return WriteResult{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
			}
			return WriteResult{}, err
		}
		if maybe {
			c.returnSession(shard, s)
			return WriteResult{}, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
		}
		s.seq-- // no attempt reached a log: the number is still free
		c.returnSession(shard, s)
		return WriteResult{}, err
	}
}

// Put sets key to value and returns the key's version after it. With
// IfVersion or IfValue it is conditional: a condition that does not hold
// is WriteResult.Succeeded false, not an error. It fails with ErrEmptyKey,
// ErrKeyTooLarge or ErrValueTooLarge before sending; ErrMalformed for both
// conditions; ErrNoSpace; and ErrUnknownOutcome when ctx ends while the
// write may have been applied (it is never applied twice).
func (c *Client) Put(ctx context.Context, key, value []byte, opts ...WriteOption) (WriteResult, error) {
	return c.write(ctx, kvpb.WriteOp_WRITE_OP_PUT, key, value, opts)
}

// Append appends value to key's value (creating it if absent), if its
// condition holds. An append that would make the value exceed the
// servers' limit fails with ErrValueTooLarge and changes nothing.
// Errors: as Put's.
func (c *Client) Append(ctx context.Context, key, value []byte, opts ...WriteOption) (WriteResult, error) {
	return c.write(ctx, kvpb.WriteOp_WRITE_OP_APPEND, key, value, opts)
}

// Delete removes key, if its condition holds; deleting a missing key
// succeeds. Errors: as Put's.
func (c *Client) Delete(ctx context.Context, key []byte, opts ...WriteOption) (WriteResult, error) {
	return c.write(ctx, kvpb.WriteOp_WRITE_OP_DELETE, key, nil, opts)
}
