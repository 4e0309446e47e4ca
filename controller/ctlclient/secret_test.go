package ctlclient_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
)

// passwordSink records every password it receives (over plaintext, as a
// listener on the path would).
type passwordSink struct {
	controllerpb.UnimplementedControllerServer
	mu        sync.Mutex
	passwords []string
	changes   int
}

func (p *passwordSink) OpenSession(context.Context, *controllerpb.OpenSessionRequest) (*controllerpb.ChangeReply, error) {
	return &controllerpb.ChangeReply{}, nil
}

func (p *passwordSink) Authenticate(_ context.Context, r *controllerpb.AuthenticateRequest) (*controllerpb.AuthenticateReply, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.passwords = append(p.passwords, r.GetPassword())
	return nil, rpcerr.Auth.ToStatus(rpcerr.ErrAuthNeedsTLS)
}

func (p *passwordSink) AuthChange(_ context.Context, r *controllerpb.AuthChangeRequest) (*controllerpb.AuthChangeReply, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.changes++
	if pw := r.GetUserAdd().GetPassword() + r.GetUserPasswd().GetPassword(); pw != "" {
		p.passwords = append(p.passwords, pw)
		return nil, rpcerr.Auth.ToStatus(rpcerr.ErrAuthNeedsTLS)
	}
	return &controllerpb.AuthChangeReply{}, nil
}

// TestPasswordsNeverSentInPlaintext: Authenticate, a user add and a
// password change carry a password, and gRPC refuses to send them over a
// plaintext connection (ErrAuthNeedsTLS), so the server never receives
// it; a change without a password still goes through.
func TestPasswordsNeverSentInPlaintext(t *testing.T) {
	sink := &passwordSink{}
	cl := dial(t, serveController(t, sink))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := cl.Authenticate(ctx, "root", "secret-1"); !errors.Is(err, rpcerr.ErrAuthNeedsTLS) {
		t.Errorf("authenticate over plaintext: %v, want ErrAuthNeedsTLS", err)
	}
	for _, req := range []*controllerpb.AuthChangeRequest{
		{Op: &controllerpb.AuthChangeRequest_UserAdd{UserAdd: &controllerpb.UserAdd{Name: "u", Password: "secret-2"}}},
		{Op: &controllerpb.AuthChangeRequest_UserPasswd{UserPasswd: &controllerpb.UserPassword{Name: "u", Password: "secret-3"}}},
	} {
		if _, err := cl.AuthChange(ctx, req); !errors.Is(err, rpcerr.ErrAuthNeedsTLS) {
			t.Errorf("%v over plaintext: %v, want ErrAuthNeedsTLS", req, err)
		}
	}
	if _, err := cl.AuthChange(ctx, &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_RoleAdd{RoleAdd: &controllerpb.RoleName{Name: "r"}}}); err != nil {
		t.Errorf("a change without a password: %v", err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.passwords) > 0 {
		t.Errorf("the server received passwords over plaintext: %q", sink.passwords)
	}
	if sink.changes != 1 {
		t.Errorf("the server received %d changes, want 1 (the one without a password)", sink.changes)
	}
}
