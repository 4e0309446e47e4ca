package cluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/bench"
	"github.com/shardkv/shardkv/internal/devcert"
	"github.com/shardkv/shardkv/internal/memberclient"
	"github.com/shardkv/shardkv/internal/rpc"
)

// syncBuffer is a log sink tests read while servers write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func authChange(op any) *controllerpb.AuthChangeRequest {
	r := &controllerpb.AuthChangeRequest{}
	switch op := op.(type) {
	case *controllerpb.UserAdd:
		r.Op = &controllerpb.AuthChangeRequest_UserAdd{UserAdd: op}
	case *controllerpb.RoleName:
		r.Op = &controllerpb.AuthChangeRequest_RoleAdd{RoleAdd: op}
	case *controllerpb.RolePermission:
		r.Op = &controllerpb.AuthChangeRequest_RoleGrant{RoleGrant: op}
	case *controllerpb.UserRole:
		r.Op = &controllerpb.AuthChangeRequest_UserGrantRole{UserGrantRole: op}
	case *controllerpb.AuthEnable:
		r.Op = &controllerpb.AuthChangeRequest_Enable{Enable: op}
	}
	return r
}

// TestAuthCluster runs a cluster with TLS, client certificates and auth
// enabled: a caller without credentials is refused; a read-only user
// cannot write; a user with a/ cannot read b/; a non-admin cannot join,
// leave, move or change membership; a write-only user learns no value
// through a write; a client certificate naming a user
// authenticates as it; a deleted user's token and a revoked
// permission stop working within auth.RevocationBound; the passwords
// appear in no log line and in no file of the replicas' data; changes are
// audited with their user.
func TestAuthCluster(t *testing.T) {
	h, clientTLS, logs := startAuth(t, 0)
	const rootPassword, alicePassword, readerPassword = "root-Pa55word-x91", "alice-Pa55word-q27", "reader-Pa55word-z63"
	setUpUsers(t, h, rootPassword, alicePassword, readerPassword)

	// No credentials (a client certificate that names no user): refused,
	// once the servers learned that auth is on.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(h.ctx, 3*time.Second)
		c, err := client.New(ctx, h.c.ControllerAddrs(), client.WithTLS(clientTLS))
		cancel()
		if err == nil {
			c.Close()
		}
		if errors.Is(err, rpcerr.ErrAuthFailed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a client without credentials: %v, want ErrAuthFailed", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A wrong password is refused.
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	_, err := client.New(ctx, h.c.ControllerAddrs(), client.WithTLS(clientTLS), client.WithCredentials("alice", "wrong"))
	cancel()
	if !errors.Is(err, rpcerr.ErrAuthFailed) {
		t.Fatalf("a wrong password: %v, want ErrAuthFailed", err)
	}

	root := h.client(client.WithTLS(clientTLS), client.WithCredentials("root", rootPassword))
	alice := h.client(client.WithTLS(clientTLS), client.WithCredentials("alice", alicePassword))
	reader := h.client(client.WithTLS(clientTLS), client.WithCredentials("reader", readerPassword))
	h.put(root, "b/1", "root's")
	h.put(alice, "a/1", "alice's")
	h.check(reader, "a/1", "alice's")
	h.check(reader, "b/1", "root's")
	denied := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, rpcerr.ErrPermissionDenied) {
			t.Errorf("%s: %v, want ErrPermissionDenied", what, err)
		}
	}
	op := func(f func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		defer cancel()
		return f(ctx)
	}
	denied("alice reads b/1", op(func(ctx context.Context) error { _, err := alice.Get(ctx, []byte("b/1")); return err }))
	denied("alice writes b/1", op(func(ctx context.Context) error { _, err := alice.Put(ctx, []byte("b/1"), []byte("x")); return err }))
	denied("reader writes a/1", op(func(ctx context.Context) error { _, err := reader.Put(ctx, []byte("a/1"), []byte("x")); return err }))
	denied("alice lists everything", op(func(ctx context.Context) error { _, err := alice.List(ctx); return err }))
	denied("alice watches b/", op(func(ctx context.Context) error {
		for r := range alice.Watch(ctx, []byte("b/"), client.WatchPrefix()) {
			if r.Canceled {
				return r.Err()
			}
		}
		return nil
	}))

	// A non-admin changes no configuration and no membership.
	ctlAs := func(user, password string) *ctlclient.Client {
		dial := rpc.DialOptions(rpc.WithTLS(clientTLS))
		creds, err := ctlclient.NewCredentials(h.c.ControllerAddrs(), user, password, dial...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { creds.Close() })
		cl, err := ctlclient.New(h.c.ControllerAddrs(), append(dial, grpc.WithPerRPCCredentials(creds))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	aliceCtl, rootCtl := ctlAs("alice", alicePassword), ctlAs("root", rootPassword)
	denied("alice joins", op(func(ctx context.Context) error {
		_, err := aliceCtl.Join(ctx, map[uint64][]string{2: h.c.GroupAddrs(2)})
		return err
	}))
	denied("alice leaves", op(func(ctx context.Context) error { _, err := aliceCtl.Leave(ctx, []uint64{1}, true); return err }))
	denied("alice moves", op(func(ctx context.Context) error { _, err := aliceCtl.Move(ctx, 0, 1); return err }))
	denied("alice changes auth", op(func(ctx context.Context) error {
		_, err := aliceCtl.AuthChange(ctx, authChange(&controllerpb.UserRole{User: "alice", Role: "admin"}))
		return err
	}))
	pool := rpc.NewPool(rpc.DialOptions(rpc.WithTLS(clientTLS), grpc.WithPerRPCCredentials(mustCreds(t, h, "alice", alicePassword, clientTLS)))...)
	defer pool.Close()
	denied("alice removes a replica", op(func(ctx context.Context) error {
		_, err := memberclient.Change(ctx, pool, &memberpb.ChangeRequest{Group: 1, Kind: memberpb.ChangeKind_CHANGE_KIND_REMOVE, Id: 3},
			h.c.GroupAddrs(1), time.Second, func(uint64) string { return "" })
		return err
	}))
	// A peer of the cluster (the cluster's own client) changes no auth:
	// that takes a user with the admin role.
	peer := h.controller()
	defer peer.Close()
	if err := op(func(ctx context.Context) error {
		_, err := peer.AuthChange(ctx, authChange(&controllerpb.UserRole{User: "alice", Role: "admin"}))
		return err
	}); !errors.Is(err, rpcerr.ErrAuthFailed) {
		t.Errorf("a peer changes auth: %v, want ErrAuthFailed", err)
	}
	// alice may still query the configuration; root may change it.
	if err := op(func(ctx context.Context) error { _, _, err := aliceCtl.Query(ctx, -1); return err }); err != nil {
		t.Errorf("alice queries: %v", err)
	}
	h.must("root joins group 2", func(ctx context.Context) error {
		_, err := rootCtl.Join(ctx, map[uint64][]string{2: h.c.GroupAddrs(2)})
		return err
	})
	h.check(alice, "a/1", "alice's") // across the migration

	// A write-only user writes, but learns no value: not by a write that
	// returns it, nor by a condition on the value or the version.
	for _, ch := range []any{&controllerpb.UserAdd{Name: "writer", Password: alicePassword}, &controllerpb.RoleName{Name: "a-w"},
		&controllerpb.RolePermission{Role: "a-w", Permission: &controllerpb.Permission{Prefix: []byte("a/"), Access: controllerpb.Access_ACCESS_WRITE}},
		&controllerpb.UserRole{User: "writer", Role: "a-w"}} {
		h.must("add writer", func(ctx context.Context) error { _, err := rootCtl.AuthChange(ctx, authChange(ch)); return err })
	}
	writer := h.client(client.WithTLS(clientTLS), client.WithCredentials("writer", alicePassword))
	for at := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		err := op(func(ctx context.Context) error { _, err := writer.Put(ctx, []byte("a/w"), []byte("1")); return err })
		if err == nil {
			break
		}
		if time.Since(at) > auth.RevocationBound {
			t.Fatalf("writer puts: %v", err)
		}
	}
	denied("writer puts returning the value", op(func(ctx context.Context) error {
		_, err := writer.Put(ctx, []byte("a/1"), []byte("x"), client.WithValue())
		return err
	}))
	denied("writer appends returning the value", op(func(ctx context.Context) error {
		_, err := writer.Append(ctx, []byte("a/1"), []byte("x"), client.WithValue())
		return err
	}))
	denied("writer puts if the value is", op(func(ctx context.Context) error {
		_, err := writer.Put(ctx, []byte("a/1"), []byte("x"), client.IfValue([]byte("alice's")))
		return err
	}))
	denied("writer deletes if the version is", op(func(ctx context.Context) error {
		_, err := writer.Delete(ctx, []byte("a/1"), client.IfVersion(1))
		return err
	}))
	h.check(alice, "a/1", "alice's") // none of them wrote

	// Revocation: deleting alice ends her token's use; revoking reader's
	// permission ends her reads; each within the documented bound.
	revoked := func(what string, change *controllerpb.AuthChangeRequest, try func(ctx context.Context) error, want error) {
		t.Helper()
		h.must(what, func(ctx context.Context) error { _, err := rootCtl.AuthChange(ctx, change); return err })
		at := time.Now()
		for {
			err := op(try)
			if errors.Is(err, want) {
				t.Logf("%s: refused after %v", what, time.Since(at))
				return
			}
			if time.Since(at) > auth.RevocationBound {
				t.Fatalf("%s: still allowed %v after the change (last: %v)", what, auth.RevocationBound, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	revoked("delete alice", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserDelete{UserDelete: &controllerpb.UserName{Name: "alice"}}},
		func(ctx context.Context) error { _, err := alice.Get(ctx, []byte("a/1")); return err }, rpcerr.ErrAuthFailed)
	revoked("revoke reader's read", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_RoleRevoke{RoleRevoke: &controllerpb.RolePermission{
		Role: "all-r", Permission: &controllerpb.Permission{}}}},
		func(ctx context.Context) error { _, err := reader.Get(ctx, []byte("b/1")); return err }, rpcerr.ErrPermissionDenied)

	// A client certificate whose common name a user names authenticates
	// as that user, with no password.
	for _, ch := range []any{&controllerpb.UserAdd{Name: "svc", CertCn: "shardkv-client"}, &controllerpb.UserRole{User: "svc", Role: "a-rw"}} {
		h.must("add svc", func(ctx context.Context) error { _, err := rootCtl.AuthChange(ctx, authChange(ch)); return err })
	}
	for at := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		svc, err := client.New(ctx, h.c.ControllerAddrs(), client.WithTLS(clientTLS))
		if err == nil {
			h.check(svc, "a/1", "alice's")
			svc.Close()
			cancel()
			break
		}
		cancel()
		if time.Since(at) > auth.RevocationBound {
			t.Fatalf("the certificate of svc: %v", err)
		}
	}

	// Audit: root's join is logged with its user; no password anywhere.
	out := logs.String()
	if !strings.Contains(out, "msg=audit") || !strings.Contains(out, "user=root") || !strings.Contains(out, "Controller/Join") {
		t.Errorf("no audit line of root's join in the logs")
	}
	if !regexp.MustCompile(`msg=audit [^\n]*Controller/Join user=alice [^\n]*permission denied`).MatchString(out) {
		t.Errorf("no audit line of alice's refused join in the logs")
	}
	h.c.Close()
	for _, pw := range []string{rootPassword, alicePassword, readerPassword} {
		if strings.Contains(out, pw) {
			t.Errorf("a password is in the logs")
		}
		_ = filepath.WalkDir(h.dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			data, err := os.ReadFile(path)
			if err == nil && bytes.Contains(data, []byte(pw)) {
				t.Errorf("a password is stored in clear in %s", path)
			}
			return nil
		})
	}
}

// TestAuthNeedsTLS: over plaintext, auth cannot be enabled and no
// password is taken.
func TestAuthNeedsTLS(t *testing.T) {
	h := start(t, cluster.Options{Groups: 1, Auth: true, PasswordCost: bcrypt.MinCost})
	ctl := h.controller()
	defer ctl.Close()
	needsTLS := func(what string, ch any) {
		t.Helper()
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		defer cancel()
		if _, err := ctl.AuthChange(ctx, authChange(ch)); !errors.Is(err, rpcerr.ErrAuthNeedsTLS) {
			t.Errorf("%s: %v, want ErrAuthNeedsTLS", what, err)
		}
	}
	needsTLS("a user with a password", &controllerpb.UserAdd{Name: "root", Password: "pw"})
	h.must("a user by certificate", func(ctx context.Context) error {
		_, err := ctl.AuthChange(ctx, authChange(&controllerpb.UserAdd{Name: "root", CertCn: "root"}))
		return err
	})
	h.must("grant admin", func(ctx context.Context) error {
		_, err := ctl.AuthChange(ctx, authChange(&controllerpb.UserRole{User: "root", Role: "admin"}))
		return err
	})
	needsTLS("enable", &controllerpb.AuthEnable{})
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if _, _, err := ctl.Authenticate(ctx, "root", "pw"); !errors.Is(err, rpcerr.ErrAuthNeedsTLS) {
		t.Errorf("authenticate: %v, want ErrAuthNeedsTLS", err)
	}
}

// startAuth starts a cluster of two groups (group 1 joined) with TLS,
// client certificates required, and auth enforced (not yet enabled), its
// tokens lasting tokenTTL (0: the default). It returns the TLS
// configuration of a client whose certificate names no user, and the
// cluster's log.
func startAuth(t *testing.T, tokenTTL time.Duration) (*harness, *tls.Config, *syncBuffer) {
	return startAuthCA(t, tokenTTL, true)
}

// startAuthCA is startAuth; one CA signs every certificate, and
// allowSharedPeerCA says whether auth may be enabled so.
func startAuthCA(t *testing.T, tokenTTL time.Duration, allowSharedPeerCA bool) (*harness, *tls.Config, *syncBuffer) {
	dir := t.TempDir()
	logs := &syncBuffer{}
	var local *devcert.Local
	h := start(t, cluster.Options{Groups: 2, Auth: true, PasswordCost: bcrypt.MinCost, TokenTTL: tokenTTL, AllowSharedPeerCA: allowSharedPeerCA,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TLS: func(id uint64) (*rpc.TLS, error) {
			var err error
			if local, err = devcert.WriteLocal(filepath.Join(dir, "tls"), rpc.PeerURI(id)); err != nil {
				return nil, err
			}
			return rpc.LoadTLS(rpc.TLSFiles{Cert: local.NodeCert, Key: local.NodeKey, TrustedCA: local.CAFile, ClientCertAuth: true}, testLogger())
		}})
	h.join(1)
	clientTLS, err := rpc.ClientTLS(local.CAFile, local.ClientCert, local.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return h, clientTLS, logs
}

// setUpUsers adds root (admin), alice (read and write a/) and reader
// (read everything), and enables auth, as the cluster's own client: a
// peer, allowed everything.
func setUpUsers(t *testing.T, h *harness, rootPassword, alicePassword, readerPassword string) {
	peer := h.controller()
	defer peer.Close()
	for _, ch := range []any{
		&controllerpb.UserAdd{Name: "root", Password: rootPassword},
		&controllerpb.UserRole{User: "root", Role: "admin"},
		&controllerpb.UserAdd{Name: "alice", Password: alicePassword},
		&controllerpb.RoleName{Name: "a-rw"},
		&controllerpb.RolePermission{Role: "a-rw", Permission: &controllerpb.Permission{Prefix: []byte("a/"), Access: controllerpb.Access_ACCESS_READWRITE}},
		&controllerpb.UserRole{User: "alice", Role: "a-rw"},
		&controllerpb.UserAdd{Name: "reader", Password: readerPassword},
		&controllerpb.RoleName{Name: "all-r"},
		&controllerpb.RolePermission{Role: "all-r", Permission: &controllerpb.Permission{Access: controllerpb.Access_ACCESS_READ}},
		&controllerpb.UserRole{User: "reader", Role: "all-r"},
		&controllerpb.AuthEnable{},
	} {
		h.must("auth change", func(ctx context.Context) error { _, err := peer.AuthChange(ctx, authChange(ch)); return err })
	}
}

// TestTokenRenewal: tokens expire (a token kept past its TTL is refused),
// and a client with credentials renews its token before that.
func TestTokenRenewal(t *testing.T) {
	const ttl = 1500 * time.Millisecond
	h, clientTLS, _ := startAuth(t, ttl)
	setUpUsers(t, h, "root-pw", "alice-pw", "reader-pw")
	alice := h.client(client.WithTLS(clientTLS), client.WithCredentials("alice", "alice-pw"))
	creds := mustCreds(t, h, "alice", "alice-pw", clientTLS)
	token, _, err := creds.Token(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	fixed := h.client(client.WithTLS(clientTLS), client.WithToken(token))
	h.put(fixed, "a/1", "x")
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		h.check(alice, "a/1", "x")
	}
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	if _, err := fixed.Get(ctx, []byte("a/1")); !errors.Is(err, rpcerr.ErrAuthFailed) {
		t.Fatalf("an expired token: %v, want ErrAuthFailed", err)
	}
}

func mustCreds(t *testing.T, h *harness, user, password string, cfg *tls.Config) *ctlclient.Credentials {
	creds, err := ctlclient.NewCredentials(h.c.ControllerAddrs(), user, password, rpc.DialOptions(rpc.WithTLS(cfg))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { creds.Close() })
	return creds
}

// BenchmarkAuthCost measures puts and gets of 64 clients against one group
// in plaintext, with TLS (client certificates required), and with TLS and
// auth enabled (a user's token on every request): the ratios are the cost
// of TLS and of the auth checks. go test -run XXX -bench AuthCost ./cluster
func BenchmarkAuthCost(b *testing.B) {
	value := make([]byte, 100)
	for _, mode := range []string{"plaintext", "tls", "tls+auth"} {
		start := func(b *testing.B) *client.Client {
			dir := b.TempDir()
			opts := cluster.Options{Dir: filepath.Join(dir, "data"), Groups: 1, EnginePerReplica: true, JoinAll: true,
				Logger: slog.New(slog.DiscardHandler), Auth: mode == "tls+auth", PasswordCost: bcrypt.MinCost, AllowSharedPeerCA: true}
			var local *devcert.Local
			if mode != "plaintext" {
				opts.TLS = func(id uint64) (*rpc.TLS, error) {
					var err error
					if local, err = devcert.WriteLocal(filepath.Join(dir, "tls"), rpc.PeerURI(id)); err != nil {
						return nil, err
					}
					return rpc.LoadTLS(rpc.TLSFiles{Cert: local.NodeCert, Key: local.NodeKey, TrustedCA: local.CAFile, ClientCertAuth: true}, slog.New(slog.DiscardHandler))
				}
			}
			ctx := context.Background()
			c, err := cluster.Start(ctx, opts)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(c.Close)
			var copts []client.Option
			if mode != "plaintext" {
				cfg, err := rpc.ClientTLS(local.CAFile, local.ClientCert, local.ClientKey)
				if err != nil {
					b.Fatal(err)
				}
				copts = append(copts, client.WithTLS(cfg))
			}
			if mode == "tls+auth" {
				ctl, err := c.ControllerClient()
				if err != nil {
					b.Fatal(err)
				}
				defer ctl.Close()
				for _, ch := range []any{&controllerpb.UserAdd{Name: "root", Password: "pw"}, &controllerpb.UserRole{User: "root", Role: "admin"},
					&controllerpb.UserAdd{Name: "app", Password: "pw"}, &controllerpb.RoleName{Name: "rw"},
					&controllerpb.RolePermission{Role: "rw", Permission: &controllerpb.Permission{Access: controllerpb.Access_ACCESS_READWRITE}},
					&controllerpb.UserRole{User: "app", Role: "rw"}, &controllerpb.AuthEnable{}} {
					if _, err := ctl.AuthChange(ctx, authChange(ch)); err != nil {
						b.Fatal(err)
					}
				}
				copts = append(copts, client.WithCredentials("app", "pw"))
			}
			cl, err := client.New(ctx, c.ControllerAddrs(), copts...)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { cl.Close() })
			for i := range 64 {
				if _, err := cl.Put(ctx, []byte(fmt.Sprint("warm", i)), []byte("x")); err != nil {
					b.Fatal(err)
				}
			}
			return cl
		}
		b.Run("put/"+mode, func(b *testing.B) {
			cl := start(b)
			bench.ReportClosedLoop(b, b.N, 64, "ops", func(i int) error {
				_, err := cl.Put(context.Background(), []byte(fmt.Sprint("key", i%10000)), value)
				return err
			})
		})
		b.Run("get/"+mode, func(b *testing.B) {
			cl := start(b)
			bench.ReportClosedLoop(b, b.N, 64, "ops", func(i int) error {
				_, err := cl.Get(context.Background(), []byte(fmt.Sprint("warm", i%64)))
				return err
			})
		})
	}
}
