package ctlclient

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/rpc"
)

// Credentials authenticate every call of the connections they are given
// to (grpc.WithPerRPCCredentials): a fixed token, or a user's password
// traded at the controller for tokens, each renewed before it expires.
// They require TLS: gRPC refuses to send them over plaintext.
type Credentials struct {
	ctl  *Client // nil with a fixed token
	user string
	// authenticate trades the user's password for a token
	// (ctl.Authenticate; tests replace it). nil with a fixed token.
	authenticate func(ctx context.Context) (token string, expires time.Time, err error)

	mu      sync.Mutex
	token   string
	expires time.Time // zero with a fixed token
	renew   time.Time // when to replace the token: a third of its life before it expires
	usable  time.Time // when to stop sending it: a tenth of its life (at most 10 s) before it expires
	pending *renewal  // the renewal under way, if any
	// After a renewal failed: its error, and no new one before retryAt
	// (doubling from 1 s up to 30 s, reset by a success).
	failed  error
	retryAt time.Time
	backoff time.Duration
}

// renewal is one Authenticate in flight, which every caller that needs
// its token waits for: done is closed once token (or err) is set.
type renewal struct {
	done    chan struct{}
	token   string
	expires time.Time
	err     error
}

// authenticateTimeout bounds one renewal: it runs on its own, not under
// the deadline of the call that started it, which other calls may wait
// for.
const authenticateTimeout = 30 * time.Second

var _ credentials.PerRPCCredentials = (*Credentials)(nil)

// NewCredentials returns the credentials of user with password, which
// authenticate at the controller replicas addrs (dialled with dial, the
// TLS options: no credentials of their own) on first use and again before
// each token expires. Close them when done.
func NewCredentials(addrs []string, user, password string, dial ...grpc.DialOption) (*Credentials, error) {
	ctl, err := New(addrs, dial...)
	if err != nil {
		return nil, err
	}
	c := &Credentials{ctl: ctl, user: user}
	c.authenticate = func(ctx context.Context) (string, time.Time, error) { return ctl.Authenticate(ctx, user, password) }
	return c, nil
}

// TokenCredentials returns credentials that send token (from
// Authenticate, or `shardkv admin auth token`) until it expires.
func TokenCredentials(token string) *Credentials { return &Credentials{token: token} }

// Token returns a token valid for a while yet, and its expiry (zero for a
// fixed token: the client does not know it). A token is renewed a third
// of its life before it expires, in the background: calls go on with the
// current one meanwhile (until a tenth of its life, at most 10 s, before
// it expires), and only a caller with no usable token waits for the
// renewal, as long as its ctx allows. One renewal runs at a time, whoever
// needs it; after one fails, none starts for a while (1 s, doubling to
// 30 s) and a caller with no usable token gets its error at once.
// Errors: those of Client.Authenticate, and ctx's.
func (c *Credentials) Token(ctx context.Context) (string, time.Time, error) {
	c.mu.Lock()
	now := time.Now()
	if c.authenticate == nil || c.token != "" && now.Before(c.renew) {
		token, expires := c.token, c.expires
		c.mu.Unlock()
		return token, expires, nil
	}
	r := c.pending
	if r == nil && now.Before(c.retryAt) {
		token, expires, failed := c.token, c.expires, c.failed
		c.mu.Unlock()
		if token != "" && now.Before(c.usable) {
			return token, expires, nil
		}
		return "", time.Time{}, failed
	}
	if r == nil {
		r = &renewal{done: make(chan struct{})}
		c.pending = r
		go c.renewToken(r)
	}
	if token, expires := c.token, c.expires; token != "" && now.Before(c.usable) {
		c.mu.Unlock()
		return token, expires, nil // still usable: renewed meanwhile
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		// The renewal's own answer, whatever the clocks say of it.
		return r.token, r.expires, r.err
	case <-ctx.Done():
		return "", time.Time{}, ctx.Err()
	}
}

// renewToken runs renewal r: it authenticates and installs the token.
func (c *Credentials) renewToken(r *renewal) {
	ctx, cancel := context.WithTimeout(context.Background(), authenticateTimeout)
	defer cancel()
	issued := time.Now()
	token, expires, err := c.authenticate(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		r.err = fmt.Errorf("authenticate as %s: %w", c.user, err)
		c.failed = r.err
		c.backoff = min(max(2*c.backoff, time.Second), 30*time.Second)
		c.retryAt = time.Now().Add(c.backoff)
	} else {
		// Renewed early, so that a call never goes out with a token about
		// to expire on its way (the controller's clock may also be ahead).
		life := expires.Sub(issued)
		r.token, r.expires = token, expires
		c.token, c.expires = token, expires
		c.renew = issued.Add(life * 2 / 3)
		c.usable = expires.Add(-min(life/10, 10*time.Second))
		c.failed, c.backoff, c.retryAt = nil, 0, time.Time{}
	}
	c.pending = nil
	close(r.done)
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c *Credentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	token, _, err := c.Token(ctx)
	if err != nil {
		// As a status of the auth domain, which every service's client
		// decodes (gRPC would make any other error Unavailable, retried).
		return nil, rpcerr.Auth.ToStatus(err)
	}
	return map[string]string{rpc.TokenMetadata: token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials:
// passwords and tokens never travel in plaintext.
func (c *Credentials) RequireTransportSecurity() bool { return true }

// Close closes the connections to the controller.
func (c *Credentials) Close() error {
	if c.ctl == nil {
		return nil
	}
	return c.ctl.Close()
}

// secretOnly is a call's credentials that add nothing but the demand of
// transport security: gRPC refuses to send a call carrying them over a
// plaintext connection, before any byte of the request leaves. Calls
// that carry a password (Authenticate, and a user add or password change)
// carry them, so a password never crosses a plaintext connection only to
// be refused by the server on arrival.
type secretOnly struct{}

// GetRequestMetadata implements credentials.PerRPCCredentials: no metadata.
func (secretOnly) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return nil, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (secretOnly) RequireTransportSecurity() bool { return true }

// secretCall is the call option of a call that carries a password.
var secretCall = grpc.PerRPCCredentials(secretOnly{})

// secretRefused turns gRPC's refusal to send a call of secretCall over a
// plaintext connection (Unauthenticated from the client's transport: no
// details, where every server refusal names its domain and reason) into
// rpcerr.ErrAuthNeedsTLS as the server would answer it; any other error
// is returned as it is.
func secretRefused(err error) error {
	if st := status.Convert(err); err == nil || st.Code() != codes.Unauthenticated || len(st.Details()) > 0 {
		return err
	}
	return rpcerr.Auth.ToStatus(fmt.Errorf("%w: a password is not sent over a plaintext connection (%s)", rpcerr.ErrAuthNeedsTLS, status.Convert(err).Message()))
}
