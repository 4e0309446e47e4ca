package rpc_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/transportpb"
	"github.com/shardkv/shardkv/internal/devcert"
	"github.com/shardkv/shardkv/internal/grouppb"
	"github.com/shardkv/shardkv/internal/grpctest"
	"github.com/shardkv/shardkv/internal/rpc"
)

const testCluster = 0xc1

// tlsServer serves the Raft (peer-only) and Replica (any caller) services,
// both unimplemented: a call that passes the TLS checks answers
// Unimplemented.
func tlsServer(t *testing.T, files rpc.TLSFiles) (addr string, creds *rpc.TLS) {
	t.Helper()
	creds, err := rpc.LoadTLS(files, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	addr = grpctest.Serve(t, func(gs *grpc.Server) {
		transportpb.RegisterRaftServer(gs, transportpb.UnimplementedRaftServer{})
		transportpb.RegisterReplicaServer(gs, transportpb.UnimplementedReplicaServer{})
	}, rpc.ServerOptions(creds.ServerOptions(testCluster)...)...)
	return addr, creds
}

// call makes one call to the Replica service (public: true) or the Raft
// service over a new connection.
func call(t *testing.T, addr string, public bool, dial ...grpc.DialOption) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, rpc.DialOptions(dial...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if public {
		_, err = transportpb.NewReplicaClient(conn).Identify(ctx, &transportpb.IdentifyRequest{})
	} else {
		_, err = transportpb.NewRaftClient(conn).Member(ctx, &transportpb.MemberRequest{})
	}
	return err
}

// localCerts makes a new CA and a local cluster's certificates under dir
// (devcert.WriteLocal), naming testCluster.
func localCerts(t testing.TB, dir string) *devcert.Local {
	t.Helper()
	l, err := devcert.WriteLocal(dir, rpc.PeerURI(testCluster))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// passed: the call went through TLS and the peer check to the handler.
func passed(err error) bool { return status.Code(err) == codes.Unimplemented }

func clientTLS(t *testing.T, ca, cert, key string) grpc.DialOption {
	t.Helper()
	cfg, err := rpc.ClientTLS(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return rpc.WithTLS(cfg)
}

func TestTLSRefusesPlaintextAndForeignClients(t *testing.T) {
	dir := t.TempDir()
	local := localCerts(t, dir)
	other := localCerts(t, filepath.Join(dir, "other"))
	addr, _ := tlsServer(t, rpc.TLSFiles{Cert: local.NodeCert, Key: local.NodeKey, TrustedCA: local.CAFile, ClientCertAuth: true})

	if err := call(t, addr, true); passed(err) || status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext call: %v, want Unavailable (handshake refused)", err)
	}
	if err := call(t, addr, true, clientTLS(t, local.CAFile, "", "")); passed(err) {
		t.Error("a client without a certificate was served under --client-cert-auth")
	}
	if err := call(t, addr, true, clientTLS(t, local.CAFile, other.ClientCert, other.ClientKey)); passed(err) {
		t.Error("a client certificate of another CA was accepted")
	}
	if err := call(t, addr, true, clientTLS(t, other.CAFile, local.ClientCert, local.ClientKey)); passed(err) {
		t.Error("the client accepted a server certificate of a CA it does not trust")
	}
	if err := call(t, addr, true, clientTLS(t, local.CAFile, local.ClientCert, local.ClientKey)); !passed(err) {
		t.Errorf("a client with the right certificate: %v", err)
	}
}

func TestTLSPeerServicesOnlyForPeersOfThisCluster(t *testing.T) {
	dir := t.TempDir()
	local := localCerts(t, dir)
	server := rpc.TLSFiles{Cert: local.NodeCert, Key: local.NodeKey, TrustedCA: local.CAFile}
	addr, _ := tlsServer(t, server)
	peer := func(files rpc.TLSFiles) grpc.DialOption {
		creds, err := rpc.LoadTLS(files, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return creds.PeerDial()[0]
	}
	// The same CA, but another cluster's identity.
	otherCluster, otherKey, err := local.CA.IssueFiles(dir, "other-cluster", devcert.Leaf{CommonName: "intruder",
		Hosts: []string{"127.0.0.1"}, URIs: []*url.URL{rpc.PeerURI(testCluster + 1)}, Server: true, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	// Another CA, this cluster's identity.
	foreign := localCerts(t, filepath.Join(dir, "foreign"))

	if err := call(t, addr, false, peer(server)); !passed(err) {
		t.Errorf("a peer of this cluster was refused: %v", err)
	}
	if err := call(t, addr, false, clientTLS(t, local.CAFile, "", "")); !rpc.IsNotPeer(err) {
		t.Errorf("a caller without a certificate reached a peer service: %v", err)
	}
	if err := call(t, addr, true, clientTLS(t, local.CAFile, "", "")); !passed(err) {
		t.Errorf("a client without a certificate was refused a public service without --client-cert-auth: %v", err)
	}
	if err := call(t, addr, false, clientTLS(t, local.CAFile, local.ClientCert, local.ClientKey)); !rpc.IsNotPeer(err) {
		t.Errorf("a client certificate without the cluster's identity reached a peer service: %v", err)
	}
	if err := call(t, addr, false, peer(rpc.TLSFiles{Cert: otherCluster, Key: otherKey, TrustedCA: local.CAFile})); !rpc.IsNotPeer(err) {
		t.Errorf("another cluster's peer reached a peer service: %v", err)
	}
	// A replica with another CA's certificate: it trusts this server (it
	// was given its CA) but the server does not trust it.
	err = call(t, addr, false, peer(rpc.TLSFiles{Cert: foreign.NodeCert, Key: foreign.NodeKey, TrustedCA: local.CAFile}))
	if passed(err) || err == nil {
		t.Errorf("a peer certificate of another CA reached a peer service: %v", err)
	}
	// Peers of a separate peer CA: the client CA's certificates with the
	// cluster's identity are not peers.
	peerCA := localCerts(t, filepath.Join(dir, "peer"))
	split := rpc.TLSFiles{Cert: local.NodeCert, Key: local.NodeKey, TrustedCA: local.CAFile,
		PeerCert: peerCA.NodeCert, PeerKey: peerCA.NodeKey, PeerTrustedCA: peerCA.CAFile}
	splitAddr, _ := tlsServer(t, split)
	if err := call(t, splitAddr, false, peer(split)); !passed(err) {
		t.Errorf("a peer with the peer CA's certificate was refused: %v", err)
	}
	if err := call(t, splitAddr, false, peer(server)); !rpc.IsNotPeer(err) {
		t.Errorf("a certificate of the client CA reached a peer service: %v", err)
	}
}

// TestTLSReload replaces the server's certificate files: new connections
// see the new certificate after Reload (SIGHUP), and after ReloadCheck
// without it (the files are watched).
func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	local := localCerts(t, dir)
	addr, creds := tlsServer(t, rpc.TLSFiles{Cert: local.NodeCert, Key: local.NodeKey, TrustedCA: local.CAFile})
	// served returns the serial of the certificate a new connection sees.
	served := func() string {
		cfg, err := rpc.ClientTLS(local.CAFile, "", "")
		if err != nil {
			t.Fatal(err)
		}
		var serial string
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			serial = cs.PeerCertificates[0].SerialNumber.String()
			return nil
		}
		if err := call(t, addr, true, rpc.WithTLS(cfg)); !passed(err) {
			t.Fatalf("call: %v", err)
		}
		return serial
	}
	replace := func() string {
		certPEM, keyPEM, err := local.CA.Issue(devcert.Leaf{CommonName: "renewed", Hosts: []string{"127.0.0.1"}, Server: true, Client: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := devcert.WriteFile(local.NodeKey, keyPEM); err != nil {
			t.Fatal(err)
		}
		if err := devcert.WriteFile(local.NodeCert, certPEM); err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c.SerialNumber.String()
	}

	first := served()
	want := replace()
	if err := creds.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != want || got == first {
		t.Fatalf("after Reload a new connection saw certificate %s, want the new %s (old %s)", got, want, first)
	}

	want = replace() // no Reload: the watcher's turn
	deadline := time.Now().Add(10 * rpc.ReloadCheck)
	for served() != want {
		if time.Now().After(deadline) {
			t.Fatalf("the replaced certificate was not served within %v", 10*rpc.ReloadCheck)
		}
		time.Sleep(rpc.ReloadCheck / 4)
	}

	// A half-written replacement keeps the certificate in use.
	if err := os.WriteFile(local.NodeCert, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := creds.Reload(); err == nil {
		t.Fatal("Reload accepted a broken certificate file")
	}
	if got := served(); got != want {
		t.Fatalf("after a failed reload the server served %s, want the last good %s", got, want)
	}
}

// TestPeerServicesNamed keeps rpc.PeerServices the generated services'
// names.
func TestPeerServicesNamed(t *testing.T) {
	want := []string{transportpb.Raft_ServiceDesc.ServiceName, grouppb.Handoff_ServiceDesc.ServiceName}
	if !slices.Equal(rpc.PeerServices, want) {
		t.Fatalf("rpc.PeerServices = %v, want %v", rpc.PeerServices, want)
	}
}

func TestTLSFilesCheck(t *testing.T) {
	for _, f := range []rpc.TLSFiles{
		{Cert: "c"},
		{Key: "k"},
		{TrustedCA: "ca"},
		{ClientCertAuth: true},
		{Cert: "c", Key: "k"},
		{Cert: "c", Key: "k", TrustedCA: "ca", PeerCert: "p"},
	} {
		if err := f.Check(); !errors.Is(err, rpc.ErrTLSFlags) {
			t.Errorf("%+v: Check() = %v, want ErrTLSFlags", f, err)
		}
	}
	for _, f := range []rpc.TLSFiles{{}, {Cert: "c", Key: "k", TrustedCA: "ca"}, {Cert: "c", Key: "k", PeerTrustedCA: "p", PeerCert: "p", PeerKey: "k"}} {
		if err := f.Check(); err != nil {
			t.Errorf("%+v: Check() = %v", f, err)
		}
	}
}

// FuzzTLSFiles feeds operator-given files of any content to the readers
// behind --cacert/--trusted-ca, --cert and --key: they return an error or
// usable credentials, and never panic.
func FuzzTLSFiles(f *testing.F) {
	local := localCerts(f, f.TempDir())
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	caPEM, certPEM, keyPEM := read(local.CAFile), read(local.NodeCert), read(local.NodeKey)
	f.Add(caPEM, certPEM, keyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), certPEM[:len(certPEM)/2], keyPEM)
	f.Add(append(caPEM, "garbage"...), keyPEM, certPEM)
	f.Fuzz(func(t *testing.T, ca, cert, key []byte) {
		dir := t.TempDir()
		write := func(name string, b []byte) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
		caFile, certFile, keyFile := write("ca.pem", ca), write("cert.pem", cert), write("key.pem", key)
		if cfg, err := rpc.ClientTLS(caFile, certFile, keyFile); err == nil && (cfg.RootCAs == nil || len(cfg.Certificates) != 1) {
			t.Fatalf("ClientTLS accepted the files but gave %+v", cfg)
		}
		creds, err := rpc.LoadTLS(rpc.TLSFiles{Cert: certFile, Key: keyFile, TrustedCA: caFile}, slog.New(slog.DiscardHandler))
		if err == nil && creds.Reload() != nil {
			t.Fatal("files loaded once fail to load again unchanged")
		}
	})
}
