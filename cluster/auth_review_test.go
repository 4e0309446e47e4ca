package cluster_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/rpc"
)

// watchProgress is the idle watch's progress period of the groups these
// tests start (groupserver's default): a watch is checked again at its
// next message.
const watchProgress = time.Second

// TestAuthWatchEndsOnRevocation: a watch is checked at every message
// after a change of the auth state, not only when it opens: a watch of a
// user whose permission is revoked ends with ErrPermissionDenied, one of a
// deleted user with ErrAuthFailed, each within auth.RevocationBound and
// the watch's next message.
func TestAuthWatchEndsOnRevocation(t *testing.T) {
	h, clientTLS, _ := startAuth(t, 0)
	setUpUsers(t, h, "root-pw", "alice-pw", "reader-pw")
	root := h.client(client.WithTLS(clientTLS), client.WithCredentials("root", "root-pw"))
	alice := h.client(client.WithTLS(clientTLS), client.WithCredentials("alice", "alice-pw"))
	reader := h.client(client.WithTLS(clientTLS), client.WithCredentials("reader", "reader-pw"))

	// watching opens a prefix watch of a/ and waits for the change of
	// a/<who>: the stream is established and checked.
	watching := func(cl *client.Client, who string) client.WatchChan {
		t.Helper()
		ch := cl.Watch(h.ctx, []byte("a/"), client.WatchPrefix(), client.WithCreatedNotify())
		for r := range ch {
			if r.Canceled {
				t.Fatalf("%s's watch: %v", who, r.Err())
			}
			if r.Created {
				h.put(root, "a/"+who, "x")
			}
			if len(r.Events) > 0 {
				return ch
			}
		}
		t.Fatalf("%s's watch closed", who)
		return nil
	}
	ends := func(what string, ch client.WatchChan, change *controllerpb.AuthChangeRequest, want error) {
		t.Helper()
		rootCtl := h.ctlAs("root", "root-pw", clientTLS)
		h.must(what, func(ctx context.Context) error { _, err := rootCtl.AuthChange(ctx, change); return err })
		at := time.Now()
		bound := auth.RevocationBound + watchProgress
		timeout := time.After(bound + 5*time.Second)
		for {
			select {
			case r, ok := <-ch:
				if !ok {
					t.Fatalf("%s: the watch closed without an error", what)
				}
				if !r.Canceled {
					continue
				}
				if !errors.Is(r.Err(), want) {
					t.Fatalf("%s: the watch ended with %v, want %v", what, r.Err(), want)
				}
				if took := time.Since(at); took > bound {
					t.Fatalf("%s: the watch ended %v after the change, more than %v", what, took, bound)
				} else {
					t.Logf("%s: the watch ended after %v", what, took)
				}
				return
			case <-timeout:
				t.Fatalf("%s: the watch still runs %v after the change", what, time.Since(at))
			}
		}
	}
	ends("revoke reader's read", watching(reader, "reader"), &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_RoleRevoke{RoleRevoke: &controllerpb.RolePermission{
		Role: "all-r", Permission: &controllerpb.Permission{}}}}, rpcerr.ErrPermissionDenied)
	ends("delete alice", watching(alice, "alice"), &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserDelete{UserDelete: &controllerpb.UserName{Name: "alice"}}},
		rpcerr.ErrAuthFailed)
}

// TestAuthWatchOutlivesItsToken: a watch stream is checked again when its
// token expires, and ends retryably (Unavailable): the client opens it
// again with its renewed token and the watch goes on, missing nothing.
func TestAuthWatchOutlivesItsToken(t *testing.T) {
	const ttl = 1500 * time.Millisecond
	h, clientTLS, _ := startAuth(t, ttl)
	setUpUsers(t, h, "root-pw", "alice-pw", "reader-pw")
	alice := h.client(client.WithTLS(clientTLS), client.WithCredentials("alice", "alice-pw"))
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	ch := alice.Watch(ctx, []byte("a/"), client.WatchPrefix(), client.WithCreatedNotify())
	for r := range ch {
		if r.Canceled {
			t.Fatalf("watch: %v", r.Err())
		}
		if r.Created {
			break
		}
	}
	n := 0
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		h.put(alice, "a/k", "x")
		n++
	}
	got := 0
	for got < n {
		select {
		case r := <-ch:
			if r.Canceled {
				t.Fatalf("the watch ended after %d of %d changes: %v", got, n, r.Err())
			}
			got += len(r.Events)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d changes delivered", got, n)
		}
	}
}

// ctlAs is a controller client authenticated as user.
func (h *harness) ctlAs(user, password string, cfg *tls.Config) *ctlclient.Client {
	h.t.Helper()
	cl, err := ctlclient.New(h.c.ControllerAddrs(), append(rpc.DialOptions(rpc.WithTLS(cfg)),
		grpc.WithPerRPCCredentials(mustCreds(h.t, h, user, password, cfg)))...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { cl.Close() })
	return cl
}

// TestAuthEnableNeedsAPeerCA: auth cannot be enabled while the servers
// verify peers with the clients' CA (any client certificate of it that
// carries the peer URI would be a peer): ErrSharedPeerCA, nothing changed.
func TestAuthEnableNeedsAPeerCA(t *testing.T) {
	h, _, _ := startAuthCA(t, 0, false)
	peer := h.controller()
	defer peer.Close()
	for _, ch := range []any{&controllerpb.UserAdd{Name: "root", Password: "root-pw"}, &controllerpb.UserRole{User: "root", Role: "admin"}} {
		h.must("auth change", func(ctx context.Context) error { _, err := peer.AuthChange(ctx, authChange(ch)); return err })
	}
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if _, err := peer.AuthChange(ctx, authChange(&controllerpb.AuthEnable{})); !errors.Is(err, rpcerr.ErrSharedPeerCA) {
		t.Fatalf("enable with one CA for clients and peers: %v, want ErrSharedPeerCA", err)
	}
	if st, err := peer.AuthState(ctx, 0, false); err != nil || st.GetEnabled() {
		t.Fatalf("auth state after the refused enable: %v %v", st, err)
	}
}
