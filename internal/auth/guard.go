package auth

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/rpc"
)

// GuardConfig configures a server's Guard.
type GuardConfig struct {
	// View returns the auth state to enforce; nil while a group process
	// has not learned it yet (every call but a peer's is then refused as
	// Unavailable, which clients retry).
	View func() *View
	// IsPeer reports whether a call comes from a process of this cluster
	// (rpc.TLS.IsPeer); nil: no caller is a peer (plaintext).
	IsPeer func(ctx context.Context) bool
	// Logger receives the audit lines (info, "audit").
	Logger *slog.Logger
	// Now is the clock tokens expire by (time.Now by default).
	Now func() time.Time
	// Unconfirmed, if set, reports whether the view is not current at now
	// (Holder.Unconfirmed: a group process cut off from the controllers
	// for longer than Lease); with auth enabled every call but a peer's is
	// then refused as Unavailable.
	Unconfirmed func(now time.Time) bool
}

// Guard enforces auth on a gRPC server (see the package doc).
type Guard struct {
	cfg GuardConfig
	log *slog.Logger
}

// NewGuard returns the guard of cfg.
func NewGuard(cfg GuardConfig) *Guard {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IsPeer == nil {
		cfg.IsPeer = func(context.Context) bool { return false }
	}
	log := cmp.Or(cfg.Logger, slog.Default()).With("component", "audit")
	return &Guard{cfg: cfg, log: log}
}

// userKey carries the authenticated user in a request's context.
type userKey struct{}

// User returns the user a request was authenticated as: "" when auth is
// off or the caller is a peer.
func User(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// ServerOptions are the interceptors that enforce auth, for a server's
// options (with rpc.ServerOptions).
func (g *Guard) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(g.unaryInterceptor()),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			s := &checkedStream{ServerStream: ss, g: g, method: info.FullMethod}
			if _, ok := rules[info.FullMethod]; ok && info.IsServerStream && !info.IsClientStream {
				// The rule reads the request: check once it is received.
				return handler(srv, s)
			}
			c, err := g.check(ss.Context(), info.FullMethod, nil)
			if err != nil {
				return err
			}
			s.c = &c
			return handler(srv, s)
		}),
	}
}

// batchMethod is KV.Batch, whose ops are checked one by one, each as the
// call it stands for (KV.Get, KV.Write).
const batchMethod = "/shardkv.kv.v1.KV/Batch"

// batch checks every op of a KV.Batch as its own Get or Write call would
// be checked, passes the handler only the ops allowed, and answers each
// refused op with its refusal: one op's missing permission never fails
// the others. The handler runs as the caller (every op carries the same
// credentials: the call's).
func (g *Guard) batch(ctx context.Context, req *kvpb.BatchRequest, handler grpc.UnaryHandler) (any, error) {
	ops := req.GetOps()
	if len(ops) > kvpb.MaxBatchOps {
		// Before any check: each costs, and the checks must stay bounded.
		return nil, kvpb.Errors.ToStatus(fmt.Errorf("%w: a batch of %d ops (at most %d)", rpcerr.ErrMalformed, len(ops), kvpb.MaxBatchOps))
	}
	refused := make([]error, len(ops))
	allowed := &kvpb.BatchRequest{Ops: make([]*kvpb.BatchOp, 0, len(ops))}
	hctx := ctx
	for i, op := range ops {
		var c checked
		var err error
		switch o := op.GetOp().(type) {
		case *kvpb.BatchOp_Get:
			c, err = g.check(ctx, "/shardkv.kv.v1.KV/Get", o.Get)
		case *kvpb.BatchOp_Write:
			c, err = g.check(ctx, "/shardkv.kv.v1.KV/Write", o.Write)
		default: // malformed: the handler says so, to a caller who may call
			c, err = g.check(ctx, batchMethod, nil)
		}
		if err != nil {
			refused[i] = err
			continue
		}
		hctx = c.ctx
		allowed.Ops = append(allowed.Ops, op)
	}
	reply := &kvpb.BatchReply{Results: make([]*kvpb.BatchResult, len(ops))}
	if len(allowed.Ops) > 0 {
		r, err := handler(hctx, allowed)
		if err != nil {
			return nil, err
		}
		results := r.(*kvpb.BatchReply).GetResults()
		if len(results) != len(allowed.Ops) {
			return nil, status.Errorf(codes.Internal, "auth: a batch of %d ops answered with %d results", len(allowed.Ops), len(results))
		}
		next := 0
		for i := range ops {
			if refused[i] == nil {
				reply.Results[i] = results[next]
				next++
			}
		}
	}
	for i, err := range refused {
		if err != nil {
			reply.Results[i] = kvpb.ErrorResult(err)
		}
	}
	return reply, nil
}

// unaryInterceptor checks every unary call (a batch's ops one by one).
func (g *Guard) unaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if b, ok := req.(*kvpb.BatchRequest); ok && info.FullMethod == batchMethod {
			return g.batch(ctx, b, handler)
		}
		c, err := g.check(ctx, info.FullMethod, req)
		if err != nil {
			// A refused change is audited too: who tried.
			g.audit(info.FullMethod, cmp.Or(c.who, "(unauthenticated)"), req, err)
			return nil, err
		}
		reply, err := handler(c.ctx, req)
		g.audit(info.FullMethod, c.who, req, err)
		return reply, err
	}
}

// checkedStream checks its first received message (when c is nil), and
// carries the authenticated user in its context. It keeps what it checked
// (the request; the token and certificate are the stream's) and against
// what (the view, the token's expiry): every message it sends is preceded
// by a check again when the view changed or the token expired since, and
// a failed one ends the stream. A watch opened by a user whose permission
// is then revoked (or who is deleted, changes password, or whose auth is
// disabled and enabled again) therefore ends at its next message.
type checkedStream struct {
	grpc.ServerStream
	g      *Guard
	method string

	mu  sync.Mutex
	req any      // the request checked (nil: the stream's start)
	c   *checked // nil until checked
}

func (s *checkedStream) Context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		return s.c.ctx
	}
	return s.ServerStream.Context()
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		return nil
	}
	c, err := s.g.check(s.ServerStream.Context(), s.method, m)
	if err != nil {
		return err
	}
	s.req, s.c = m, &c
	return nil
}

func (s *checkedStream) SendMsg(m any) error {
	if err := s.recheck(); err != nil {
		return err
	}
	return s.ServerStream.SendMsg(m)
}

// recheck checks the stream's call again when the view changed or its
// token expired since the last check.
func (s *checkedStream) recheck() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		return nil // nothing received, nothing to send of it
	}
	expired := !s.c.expires.IsZero() && !s.g.cfg.Now().Before(s.c.expires)
	if s.g.cfg.View() == s.c.view && !expired {
		return nil
	}
	c, err := s.g.check(s.ServerStream.Context(), s.method, s.req)
	if err != nil {
		if expired && status.Code(err) == codes.Unauthenticated {
			// Its client renews tokens before they expire: a stream it
			// opens again carries the new one (a client with this token
			// only is refused then, ErrAuthFailed).
			return status.Error(codes.Unavailable, "auth: the stream's token expired: open it again with a current token")
		}
		return err
	}
	s.c = &c
	return nil
}

// Who an audit line names when the caller is no user.
const (
	whoAuthOff = "(auth off)"
	whoPeer    = "(peer)"
	whoPublic  = "(anyone)"
)

// checked is what check found of a call: the context carrying its user,
// who called for the audit (the user, or whoPeer, whoAuthOff, whoPublic),
// the view it was checked against and its token's expiry (zero: no token).
type checked struct {
	ctx     context.Context
	who     string
	view    *View
	expires time.Time
}

// check authenticates and authorizes one call of method with request req
// (nil for a stream's start). On failure who is set when the caller was
// authenticated.
func (g *Guard) check(ctx context.Context, method string, req any) (checked, error) {
	v := g.cfg.View()
	c := checked{ctx: ctx, view: v}
	// Auth off costs nothing more: neither the rule (which may copy the
	// key) nor the peer check (a chain verification) runs.
	if v != nil && !v.Enabled {
		c.who = whoAuthOff
		return c, nil
	}
	rule := rules[method]
	if rule == nil {
		rule = needAdmin // default deny
	}
	n := rule(req)
	switch {
	case n.kind == public:
		c.who = whoPublic
		return c, nil
	case !userOnly[method] && g.cfg.IsPeer(ctx):
		c.who = whoPeer
		return c, nil
	}
	if v == nil {
		return c, status.Error(codes.Unavailable, "auth: this server has not learned the cluster's auth state yet")
	}
	now := g.cfg.Now()
	if g.cfg.Unconfirmed != nil && g.cfg.Unconfirmed(now) {
		return c, status.Errorf(codes.Unavailable, "auth: the controller has not confirmed this server's auth state (revision %d) for more than %v", v.Revision, Lease)
	}
	var token string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if t := md.Get(rpc.TokenMetadata); len(t) > 0 {
			token = t[0]
		}
	}
	if token != "" && !rpc.IsTLS(ctx) {
		return c, rpcerr.Auth.ToStatus(fmt.Errorf("%w: a token came over a plaintext connection", rpcerr.ErrAuthNeedsTLS))
	}
	cert, _ := rpc.CallerCertificate(ctx)
	user, expires, err := v.authenticate(token, cert, now)
	if errors.Is(err, errBehind) {
		return c, status.Error(codes.Unavailable, err.Error())
	}
	if err != nil {
		return c, rpcerr.Auth.ToStatus(err)
	}
	c.who = user
	if !n.allowed(v, user) {
		return c, rpcerr.Auth.ToStatus(fmt.Errorf("%w: user %s may not call %s%s", rpcerr.ErrPermissionDenied, user, method, n.what()))
	}
	c.ctx, c.expires = context.WithValue(ctx, userKey{}, user), expires
	return c, nil
}

// userOnly are the methods no peer may call as such: only a user with the
// admin role. No process of the cluster needs them, and a peer
// certificate is a weaker secret than the admin's (every server has one,
// and with --peer-trusted-ca left to default any client certificate of
// the shared CA that carries the peer URI is one): changing auth, or
// reading every shard for a backup, takes an administrator.
var userOnly = map[string]bool{
	"/shardkv.controller.v1.Controller/AuthChange": true,
	"/shardkv.internal.group.v1.Backup/ReadShards": true,
}

// audited are the methods whose every call is logged, with its caller.
var audited = map[string]bool{
	"/shardkv.controller.v1.Controller/Join":        true,
	"/shardkv.controller.v1.Controller/Leave":       true,
	"/shardkv.controller.v1.Controller/Move":        true,
	"/shardkv.controller.v1.Controller/SetReplicas": true,
	"/shardkv.controller.v1.Controller/AuthChange":  true,
	"/shardkv.member.v1.Membership/Change":          true,
	"/shardkv.member.v1.Node/Host":                  true,
	"/shardkv.member.v1.Node/Unhost":                true,
}

// authenticateMethod is audited when it fails: who tried to log in as
// whom (never the password).
const authenticateMethod = "/shardkv.controller.v1.Controller/Authenticate"

// audit logs a call of an audited method: who (the user, or what check
// said instead), what (the request, passwords removed), the outcome. A
// failed Authenticate is logged with the user it claimed.
func (g *Guard) audit(method, who string, req any, err error) {
	if method == authenticateMethod && err != nil {
		r, _ := req.(*controllerpb.AuthenticateRequest)
		who = fmt.Sprintf("%s (claimed)", r.GetName())
	} else if !audited[method] {
		return
	}
	if notLeader(err) {
		// Not served here (a follower's redirect): where it is served,
		// it is audited. Any other Unavailable (a leader change) may
		// still have committed.
		return
	}
	outcome := "ok"
	if err != nil {
		outcome = err.Error()
	}
	g.log.Info("audit", "method", method, "user", who, "request", Redact(req), "outcome", outcome)
}

// notLeader reports whether err is a NOT_LEADER refusal (rpcerr.ErrNotLeader,
// under whichever service's domain): certainly not applied.
func notLeader(err error) bool {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == rpcerr.NotLeaderReason {
			return true
		}
	}
	return false
}

// Redact returns req for a log line: an auth change or an Authenticate
// loses its password.
func Redact(req any) string {
	if a, ok := req.(*controllerpb.AuthenticateRequest); ok {
		a = proto.Clone(a).(*controllerpb.AuthenticateRequest)
		a.Password = ""
		req = a
	}
	if ch, ok := req.(*controllerpb.AuthChangeRequest); ok {
		ch = proto.Clone(ch).(*controllerpb.AuthChangeRequest)
		if u := ch.GetUserAdd(); u != nil {
			u.Password = ""
		}
		if u := ch.GetUserPasswd(); u != nil {
			u.Password = ""
		}
		req = ch
	}
	if m, ok := req.(proto.Message); ok {
		return fmt.Sprint(m)
	}
	return fmt.Sprintf("%T", req)
}

// need is what one call requires.
type need struct {
	kind       needKind
	start, end []byte // keyRange: [start, end), end nil: no end
	access     controllerpb.Access
}

type needKind int

const (
	admin needKind = iota
	public
	anyUser
	keyRange
)

func (n need) allowed(v *View, user string) bool {
	switch n.kind {
	case anyUser:
		return true
	case keyRange:
		return v.CanRange(user, n.start, n.end, n.access)
	}
	return v.IsAdmin(user)
}

func (n need) what() string {
	switch n.kind {
	case keyRange:
		if bytes.Equal(n.end, append(slices.Clip(n.start), 0)) {
			return fmt.Sprintf(" (needs %s on key %q)", FormatAccess(n.access), n.start)
		}
		return fmt.Sprintf(" (needs %s on [%q, %q))", FormatAccess(n.access), n.start, n.end)
	case admin:
		return " (needs the admin role)"
	}
	return ""
}

func needAdmin(any) need   { return need{kind: admin} }
func needPublic(any) need  { return need{kind: public} }
func needAnyUser(any) need { return need{kind: anyUser} }

// rules map each method to what it needs; a method not here needs admin.
var rules = map[string]func(req any) need{
	"/shardkv.controller.v1.Controller/Authenticate": needPublic,
	"/shardkv.controller.v1.Controller/OpenSession":  needAnyUser,
	"/shardkv.controller.v1.Controller/Query":        needAnyUser,
	"/shardkv.controller.v1.Controller/Watch":        needAnyUser,
	"/shardkv.member.v1.Membership/List":             needAnyUser,
	"/shardkv.transport.v1.Replica/Identify":         needAnyUser,
	"/shardkv.kv.v1.KV/Status": func(req any) need {
		// Digests read the replica's whole state.
		if r, _ := req.(*kvpb.StatusRequest); r.GetDigests() {
			return need{kind: admin}
		}
		return need{kind: anyUser}
	},
	// KV.Batch: its ops are checked one by one (Guard.batch); a malformed
	// op is refused as such to any user.
	batchMethod: needAnyUser,
	"/shardkv.kv.v1.KV/Get": func(req any) need {
		r, _ := req.(*kvpb.GetRequest)
		return keyNeed(r.GetKey(), controllerpb.Access_ACCESS_READ)
	},
	"/shardkv.kv.v1.KV/Write": func(req any) need {
		r, _ := req.(*kvpb.WriteRequest)
		return keyNeed(r.GetKey(), writeAccess(r))
	},
	"/shardkv.kv.v1.KV/List": func(req any) need {
		r, _ := req.(*kvpb.ListRequest)
		return need{kind: keyRange, start: r.GetStart(), end: r.GetEnd(), access: controllerpb.Access_ACCESS_READ}
	},
	"/shardkv.kv.v1.KV/Watch": func(req any) need {
		r, _ := req.(*kvpb.WatchRequest)
		if r.GetPrefix() {
			return need{kind: keyRange, start: r.GetKey(), end: kvpb.PrefixEnd(r.GetKey()), access: controllerpb.Access_ACCESS_READ}
		}
		return keyNeed(r.GetKey(), controllerpb.Access_ACCESS_READ)
	},
}

// writeAccess is what a write needs: WRITE, and READ too when it learns
// the key's value: return_value (the value before a write, or after an
// APPEND) returns it, and a condition on the value or the version is an
// equality test whose outcome tells it (etcd needs read for a Txn's
// compares and prev_kv so too).
func writeAccess(r *kvpb.WriteRequest) controllerpb.Access {
	if r.GetReturnValue() || r.IfValue != nil || r.IfVersion != nil {
		return controllerpb.Access_ACCESS_READWRITE
	}
	return controllerpb.Access_ACCESS_WRITE
}

// keyNeed is access to the one key k: the range [k, k+"\x00").
func keyNeed(k []byte, access controllerpb.Access) need {
	return need{kind: keyRange, start: k, end: append(append([]byte(nil), k...), 0), access: access}
}
