package ctlserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/controllerlogpb"
	"github.com/shardkv/shardkv/internal/rpc"
)

// AuthChange implements controllerpb.ControllerServer. The leader turns
// the request into the logged command: it hashes the password (bcrypt, so
// no replica ever stores or logs it) and, for an enable, generates the
// token-signing key (randomness stays out of the state machine). Enabling
// is refused (ErrAuthNeedsTLS, nothing proposed) unless this replica
// serves TLS with client-certificate authentication, and (ErrSharedPeerCA)
// while it verifies peers with the clients' CAs, unless allowed.
func (s *Server) AuthChange(ctx context.Context, req *controllerpb.AuthChangeRequest) (*controllerpb.AuthChangeReply, error) {
	if !s.node.Status().IsLeader {
		return nil, controllerpb.Errors.ToStatus(s.node.NotLeader())
	}
	cmd := &controllerlogpb.AuthCommand{Change: proto.Clone(req).(*controllerpb.AuthChangeRequest)}
	password := ""
	switch op := cmd.Change.GetOp().(type) {
	case *controllerpb.AuthChangeRequest_Enable:
		if !s.cfg.ClientCertAuth {
			return nil, controllerpb.Errors.ToStatus(fmt.Errorf("%w: start every replica with --cert, --key, --trusted-ca and --client-cert-auth", rpcerr.ErrAuthNeedsTLS))
		}
		if s.cfg.SharedPeerCA {
			return nil, controllerpb.Errors.ToStatus(fmt.Errorf("%w: give the replicas a peer CA of their own (--peer-trusted-ca, --peer-cert, --peer-key), "+
				"or start the controllers with --allow-shared-peer-ca", rpcerr.ErrSharedPeerCA))
		}
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, controllerpb.Errors.ToStatus(fmt.Errorf("generate the token-signing key: %w", err))
		}
		cmd.SigningKey = key.Seed()
	case *controllerpb.AuthChangeRequest_UserAdd:
		password, op.UserAdd.Password = op.UserAdd.GetPassword(), ""
	case *controllerpb.AuthChangeRequest_UserPasswd:
		password, op.UserPasswd.Password = op.UserPasswd.GetPassword(), ""
	}
	if password != "" {
		if !rpc.IsTLS(ctx) {
			return nil, controllerpb.Errors.ToStatus(fmt.Errorf("%w: a password came over a plaintext connection", rpcerr.ErrAuthNeedsTLS))
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cfg.PasswordCost)
		if err != nil {
			// Only a password above bcrypt's 72 bytes fails.
			return nil, controllerpb.Errors.ToStatus(fmt.Errorf("%w: password: %w", rpcerr.ErrInvalidAuth, err))
		}
		cmd.PasswordHash = hash
	}
	if _, err := s.change(ctx, &controllerlogpb.Command{Op: &controllerlogpb.Command_Auth{Auth: cmd}}); err != nil {
		return nil, err
	}
	rev, _ := s.store.AuthRevision()
	return &controllerpb.AuthChangeReply{Header: s.header(0), Revision: rev}, nil
}

// Authenticate implements controllerpb.ControllerServer: on the leader,
// with a confirmed read index (a user deleted or a password changed a
// moment ago is known), it checks the password and signs a token of
// TokenTTL. Every failure is the same ErrAuthFailed, not saying whether
// the user exists.
func (s *Server) Authenticate(ctx context.Context, req *controllerpb.AuthenticateRequest) (*controllerpb.AuthenticateReply, error) {
	if !rpc.IsTLS(ctx) {
		return nil, controllerpb.Errors.ToStatus(fmt.Errorf("%w: a password came over a plaintext connection", rpcerr.ErrAuthNeedsTLS))
	}
	if !s.node.Status().IsLeader {
		return nil, controllerpb.Errors.ToStatus(s.node.NotLeader())
	}
	if err := s.node.ReadIndex(ctx); err != nil {
		return nil, controllerpb.Errors.ToStatus(err)
	}
	key, ok := s.store.SigningKey()
	if !ok {
		return nil, controllerpb.Errors.ToStatus(fmt.Errorf("%w: auth is not enabled", rpcerr.ErrAuthFailed))
	}
	hash, epoch, ok := s.store.UserSecret(req.GetName())
	valid := ok && len(hash) > 0 // a certificate-only user has no password
	if !valid {
		// A missing user costs a comparison too, so timing does not tell.
		hash = s.dummyHash
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(req.GetPassword())); err != nil || !valid {
		if err != nil && !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			s.log.Warn("password check failed", "user", req.GetName(), "err", err)
		}
		return nil, controllerpb.Errors.ToStatus(fmt.Errorf("%w: wrong user name or password", rpcerr.ErrAuthFailed))
	}
	rev, _ := s.store.AuthRevision()
	expires := time.Now().Add(s.cfg.TokenTTL).UnixMilli()
	token := auth.Sign(key, auth.Claims{User: req.GetName(), Epoch: epoch, Revision: rev, Expires: expires})
	return &controllerpb.AuthenticateReply{Header: s.header(0), Token: token, ExpiresUnixMs: expires}, nil
}

// AuthState implements controllerpb.ControllerServer: the public auth
// state, at once or, with wait, as a long poll like Watch's.
func (s *Server) AuthState(ctx context.Context, req *controllerpb.AuthStateRequest) (*controllerpb.AuthStateReply, error) {
	view := func() *controllerpb.AuthStateReply {
		v := s.store.AuthView()
		v.Header = s.header(0)
		return v
	}
	return longPoll(s, ctx, func() (*controllerpb.AuthStateReply, bool) {
		// Committed, so true, even if this replica is behind.
		if rev, _ := s.store.AuthRevision(); rev <= req.GetAfter() && req.GetWait() {
			return nil, false
		}
		return view(), true
	}, func() (*controllerpb.AuthStateReply, error) { return view(), nil })
}

// publishAuth keeps s.cfg.Auth (if set) at the replica's applied auth
// state, for this process's guard, until the replica stops.
func (s *Server) publishAuth() {
	if s.cfg.Auth == nil {
		return
	}
	for {
		changed := s.store.Changed()
		s.cfg.Auth.Set(s.store.AuthView())
		select {
		case <-changed:
		case <-s.stop:
			return
		}
	}
}
