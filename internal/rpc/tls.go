package rpc

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TLS in shardkv. Every process serves its clients and its peers on one
// port, so one server certificate (--cert) answers both. Callers are told
// apart by the certificate they present:
//
//   - a client presents one signed by --trusted-ca (required with
//     --client-cert-auth, verified if given otherwise);
//   - a peer (another replica of this cluster: raft between replicas,
//     shard pulls and deletes between groups) presents its --peer-cert,
//     which must chain to --peer-trusted-ca and carry this cluster's
//     identity, the URI PeerURI(cluster id), as a subject alternative name.
//     The peer-only services (PeerServices) refuse any other caller.
//
// Certificates and CAs are read from files and read again when they change
// (checked at most every ReloadCheck, on the next handshake) or on Reload
// (SIGHUP): connections made afterwards use the new ones, established
// connections keep theirs.

// TLSFiles names a server process's TLS material (etcd's flags). Empty
// Cert means plaintext.
type TLSFiles struct {
	Cert, Key string // this process's certificate and key (PEM), served to every caller
	TrustedCA string // CAs (PEM) that sign client certificates and servers' certificates
	// ClientCertAuth refuses clients without a certificate signed by
	// TrustedCA (or PeerTrustedCA).
	ClientCertAuth bool
	// PeerCert and PeerKey are presented when calling peers (default Cert
	// and Key); PeerTrustedCA signs the peers' certificates (default
	// TrustedCA).
	PeerCert, PeerKey, PeerTrustedCA string
}

// ErrTLSFlags: TLS files given in a combination that cannot work (a
// certificate without its key, peer files without a certificate).
var ErrTLSFlags = errors.New("incomplete TLS settings")

// Enabled reports whether f turns TLS on.
func (f TLSFiles) Enabled() bool { return f.Cert != "" }

// Check reports (as ErrTLSFlags) settings that cannot work.
func (f TLSFiles) Check() error {
	switch {
	case (f.Cert == "") != (f.Key == ""):
		return fmt.Errorf("%w: --cert and --key go together", ErrTLSFlags)
	case (f.PeerCert == "") != (f.PeerKey == ""):
		return fmt.Errorf("%w: --peer-cert and --peer-key go together", ErrTLSFlags)
	case !f.Enabled() && (f.TrustedCA != "" || f.ClientCertAuth || f.PeerCert != "" || f.PeerTrustedCA != ""):
		return fmt.Errorf("%w: --trusted-ca, --client-cert-auth and --peer-* need --cert and --key (the server's certificate)", ErrTLSFlags)
	case f.Enabled() && f.TrustedCA == "" && f.PeerTrustedCA == "":
		return fmt.Errorf("%w: --trusted-ca is required with --cert (it verifies the peers this process calls)", ErrTLSFlags)
	}
	return nil
}

// peerScheme and peerHost make a peer identity URI:
// shardkv://cluster/<16 hex digits of the cluster id>.
const (
	peerScheme = "shardkv"
	peerHost   = "cluster"
)

// PeerURI is the subject alternative name a peer certificate of cluster
// clusterID carries: shardkv://cluster/<cluster id in 16 hex digits>.
func PeerURI(clusterID uint64) *url.URL {
	return &url.URL{Scheme: peerScheme, Host: peerHost, Path: fmt.Sprintf("/%016x", clusterID)}
}

// PeerServices are the gRPC services only peers of this cluster may call
// (see TLS): raft between replicas (transportpb.Raft) and shard pulls and
// deletes between groups (grouppb.Handoff). Named here, not imported, so
// that clients linking this package link no server protos; a test checks
// the names against the generated descriptors.
var PeerServices = []string{"shardkv.transport.v1.Raft", "shardkv.internal.group.v1.Handoff"}

// ReloadCheck is how often, at most, the files are checked for changes
// (on a handshake, so an idle process reads nothing).
const ReloadCheck = time.Second

// ErrNotPeer is the error (as a PermissionDenied status) of a call to a
// peer-only service by a caller that is not a peer of this cluster.
var ErrNotPeer = errors.New("not a peer of this cluster")

// IsNotPeer reports whether err is a peer-only service's refusal of a
// caller that is not a peer of its cluster (ErrNotPeer).
func IsNotPeer(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.PermissionDenied && strings.HasPrefix(st.Message(), ErrNotPeer.Error())
}

// TLS is a server process's TLS credentials, reloaded as their files
// change. Safe for concurrent use.
type TLS struct {
	files TLSFiles
	log   *slog.Logger

	mu      sync.Mutex
	cur     *material
	checked time.Time
}

// material is one reading of the files.
type material struct {
	stamp     string // the files' sizes and modification times
	cert      *tls.Certificate
	peerCert  *tls.Certificate
	roots     *x509.CertPool // verifies servers: TrustedCA and PeerTrustedCA
	clientCAs *x509.CertPool // verifies callers: the same
	peerRoots *x509.CertPool // verifies peers: PeerTrustedCA (or TrustedCA)
}

// LoadTLS reads f's files. Errors name the file at fault.
func LoadTLS(f TLSFiles, log *slog.Logger) (*TLS, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	if !f.Enabled() {
		return nil, fmt.Errorf("%w: no --cert", ErrTLSFlags)
	}
	f.PeerCert, f.PeerKey = cmp.Or(f.PeerCert, f.Cert), cmp.Or(f.PeerKey, f.Key)
	t := &TLS{files: f, log: log}
	m, err := t.read()
	if err != nil {
		return nil, err
	}
	t.cur, t.checked = m, time.Now()
	return t, nil
}

// Reload reads the files again now (on SIGHUP). On an error the
// credentials in use stay.
func (t *TLS) Reload() error {
	m, err := t.read()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checked = time.Now()
	if err != nil {
		return err
	}
	if m.stamp != t.cur.stamp {
		t.log.Info("TLS certificates reloaded", "cert", t.files.Cert, "peer_cert", t.files.PeerCert)
	}
	t.cur = m
	return nil
}

// current returns the material, read again first if ReloadCheck passed
// and a file changed.
func (t *TLS) current() *material {
	t.mu.Lock()
	if time.Since(t.checked) < ReloadCheck {
		defer t.mu.Unlock()
		return t.cur
	}
	t.checked = time.Now()
	cur := t.cur
	t.mu.Unlock()
	if stamp, err := t.stamp(); err != nil || stamp == cur.stamp {
		return cur
	}
	if err := t.Reload(); err != nil {
		t.log.Warn("TLS files changed but cannot be read; keeping the certificates in use", "err", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// paths are the files in the order stamp reads them.
func (t *TLS) paths() []string {
	f := t.files
	return []string{f.Cert, f.Key, f.PeerCert, f.PeerKey, f.TrustedCA, f.PeerTrustedCA}
}

func (t *TLS) stamp() (string, error) {
	var b strings.Builder
	for _, p := range t.paths() {
		if p == "" {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "%s:%d:%d;", p, st.Size(), st.ModTime().UnixNano())
	}
	return b.String(), nil
}

func (t *TLS) read() (*material, error) {
	f := t.files
	stamp, err := t.stamp()
	if err != nil {
		return nil, err
	}
	m := &material{stamp: stamp}
	if m.cert, err = loadKeyPair(f.Cert, f.Key); err != nil {
		return nil, err
	}
	if m.peerCert, err = loadKeyPair(f.PeerCert, f.PeerKey); err != nil {
		return nil, err
	}
	trusted, err := readCAs(f.TrustedCA)
	if err != nil {
		return nil, err
	}
	peerTrusted, err := readCAs(f.PeerTrustedCA)
	if err != nil {
		return nil, err
	}
	if f.PeerTrustedCA == "" {
		peerTrusted = trusted
	}
	m.roots, m.clientCAs, m.peerRoots = x509.NewCertPool(), x509.NewCertPool(), x509.NewCertPool()
	for _, c := range append(trusted, peerTrusted...) {
		m.roots.AddCert(c)
		m.clientCAs.AddCert(c)
	}
	for _, c := range peerTrusted {
		m.peerRoots.AddCert(c)
	}
	return m, nil
}

func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &c, nil
}

// readCAs reads every certificate of a PEM file; none for an empty path.
func readCAs(path string) ([]*x509.Certificate, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA file %s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", path)
	}
	return out, nil
}

// ServerOptions are the options that make a server of cluster clusterID
// serve TLS only (plaintext callers fail their handshake) and refuse
// callers of PeerServices that are not its peers (PermissionDenied,
// ErrNotPeer). Use them with ServerOptions(...).
func (t *TLS) ServerOptions(clusterID uint64) []grpc.ServerOption {
	auth := tls.VerifyClientCertIfGiven
	if t.files.ClientCertAuth {
		auth = tls.RequireAndVerifyClientCert
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := t.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*m.cert},
				ClientCAs:    m.clientCAs,
				ClientAuth:   auth,
				NextProtos:   []string{"h2"}, // gRPC's ALPN: clients refuse servers that do not negotiate it
			}, nil
		},
	}
	want := PeerURI(clusterID).String()
	check := func(ctx context.Context, method string) error {
		if !isPeerMethod(method) {
			return nil
		}
		return t.checkPeer(ctx, want)
	}
	return append([]grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, checkCalls(check)...)
}

// IsPeer reports whether the caller of the request in ctx is a peer of
// cluster clusterID: its certificate chains to the peer CAs and names
// PeerURI(clusterID). Auth lets peers do everything (internal/auth).
func (t *TLS) IsPeer(ctx context.Context, clusterID uint64) bool {
	want := PeerURI(clusterID).String()
	// A client's certificate names no peer URI: it is told apart without
	// verifying its chain again.
	cert, ok := CallerCertificate(ctx)
	if !ok || !slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == want }) {
		return false
	}
	return t.checkPeer(ctx, want) == nil
}

// SharedPeerCA reports whether peers are verified with the clients' CAs
// (--peer-trusted-ca not given, or the same file as --trusted-ca): then a
// client certificate of those CAs that carries the peer URI is a peer.
func (t *TLS) SharedPeerCA() bool {
	return t.files.PeerTrustedCA == "" || t.files.PeerTrustedCA == t.files.TrustedCA
}

// ClientCertAuth reports whether the server refuses clients without a
// verified certificate (--client-cert-auth): enabling auth requires it.
func (t *TLS) ClientCertAuth() bool { return t.files.ClientCertAuth }

// TokenMetadata is the gRPC metadata key of an auth token (see
// ctlclient.Credentials and internal/auth).
const TokenMetadata = "token"

// IsTLS reports whether the request in ctx came over TLS.
func IsTLS(ctx context.Context) bool {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false
	}
	_, ok = p.AuthInfo.(credentials.TLSInfo)
	return ok
}

// isPeerMethod reports whether a full method name (/service/method) is of
// one of PeerServices.
func isPeerMethod(method string) bool {
	for _, s := range PeerServices {
		if strings.HasPrefix(method, "/"+s+"/") {
			return true
		}
	}
	return false
}

// checkPeer refuses a caller whose certificate does not chain to the peer
// CAs or does not name want (PeerURI).
func (t *TLS) checkPeer(ctx context.Context, want string) error {
	p, ok := peer.FromContext(ctx)
	var info credentials.TLSInfo
	if ok {
		info, ok = p.AuthInfo.(credentials.TLSInfo)
	}
	if !ok || len(info.State.PeerCertificates) == 0 {
		return status.Errorf(codes.PermissionDenied, "%v: no client certificate (a peer presents its --peer-cert)", ErrNotPeer)
	}
	certs := info.State.PeerCertificates
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: t.current().peerRoots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return status.Errorf(codes.PermissionDenied, "%v: certificate %q is not signed by the peer CA (%v)", ErrNotPeer, certs[0].Subject.CommonName, err)
	}
	for _, u := range certs[0].URIs {
		if u.String() == want {
			return nil
		}
	}
	return status.Errorf(codes.PermissionDenied, "%v: certificate %q does not name %s", ErrNotPeer, certs[0].Subject.CommonName, want)
}

// PeerDial are the dial options of a connection to a peer: the server's
// certificate is verified against the trusted CAs and must name the host
// dialled, and the peer certificate is presented, both as the files are
// at each handshake (reconnections pick up reloaded files). Use them with
// DialOptions(...).
func (t *TLS) PeerDial() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(peerCreds{t: t, TransportCredentials: credentials.NewTLS(nil)})}
}

// peerCreds makes each client handshake with the credentials current at
// that moment (credentials.NewTLS fixes its configuration's RootCAs). It
// is a client's only: ServerHandshake is the embedded one's, never used.
type peerCreds struct {
	t *TLS
	credentials.TransportCredentials
}

func (c peerCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	m := c.t.current()
	return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: m.roots, Certificates: []tls.Certificate{*m.peerCert}}).
		ClientHandshake(ctx, authority, conn)
}

func (c peerCreds) Clone() credentials.TransportCredentials { return c }

// ClientTLS reads a client's TLS files (etcdctl's --cacert, --cert,
// --key): caFile verifies the servers (empty: the system's roots); certFile
// and keyFile, if given, are the client certificate. The result suits
// client.WithTLS and credentials.NewTLS.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: --cert and --key go together", ErrTLSFlags)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		cas, err := readCAs(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		for _, c := range cas {
			cfg.RootCAs.AddCert(c)
		}
	}
	if certFile != "" {
		c, err := loadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{*c}
	}
	return cfg, nil
}

// WithTLS is the dial option of a TLS connection with cfg.
func WithTLS(cfg *tls.Config) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// CallerCertificate returns the verified certificate the caller of the
// request in ctx presented, if any (the seam for authorization by
// certificate identity).
func CallerCertificate(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return info.State.VerifiedChains[0][0], true
}
