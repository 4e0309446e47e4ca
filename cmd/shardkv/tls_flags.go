package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/internal/auth"
	"github.com/shardkv/shardkv/internal/rpc"
)

// serverTLSFlags are the TLS flags of the server processes (controller,
// server), etcd's names; SHARDKV_CERT and the rest set them too (applyEnv).
type serverTLSFlags struct {
	files rpc.TLSFiles
	creds *rpc.TLS // loaded by load; nil: plaintext
	// allowSharedPeerCA lets a controller enable auth while peers are
	// verified with the clients' CAs (dev --tls).
	allowSharedPeerCA bool
}

func (s *serverTLSFlags) register(f *pflag.FlagSet) {
	f.StringVar(&s.files.Cert, "cert", "", "TLS: this replica's certificate (PEM), served to clients and peers; TLS is on when given")
	f.StringVar(&s.files.Key, "key", "", "TLS: the key of --cert (PEM)")
	f.StringVar(&s.files.TrustedCA, "trusted-ca", "", "TLS: CA certificates (PEM) that sign client certificates and the servers' certificates this replica calls")
	f.BoolVar(&s.files.ClientCertAuth, "client-cert-auth", false, "TLS: refuse clients without a certificate signed by --trusted-ca")
	f.StringVar(&s.files.PeerCert, "peer-cert", "", "TLS: the certificate (PEM) this replica presents to its peers (default --cert); "+
		"it must carry the URI shardkv://cluster/<cluster id in 16 hex digits> as a subject alternative name")
	f.StringVar(&s.files.PeerKey, "peer-key", "", "TLS: the key of --peer-cert (PEM)")
	f.StringVar(&s.files.PeerTrustedCA, "peer-trusted-ca", "", "TLS: CA certificates (PEM) that sign the peers' certificates (default --trusted-ca)")
	f.BoolVar(&s.allowSharedPeerCA, "allow-shared-peer-ca", false, "auth: let a controller enable auth while peers are verified with --trusted-ca "+
		"(no --peer-trusted-ca of their own): any client certificate of those CAs carrying the peer URI is then a peer; for throwaway clusters (dev --tls)")
}

// load reads the files, if TLS is on, and reloads them on SIGHUP until ctx
// ends. Files given in a combination that cannot work are a usage error.
func (s *serverTLSFlags) load(ctx context.Context, log *slog.Logger) error {
	if err := s.files.Check(); err != nil {
		return usageError(err)
	}
	if !s.files.Enabled() {
		hangupWithoutTLS(ctx, log)
		return nil
	}
	creds, err := rpc.LoadTLS(s.files, log)
	if err != nil {
		return err
	}
	s.creds = creds
	reloadOnHangup(ctx, creds, log)
	return nil
}

// peerDial are the dial options of this process's connections to the
// other processes of cluster clusterID (0: the id is not stated).
func (s *serverTLSFlags) peerDial(clusterID uint64) []grpc.DialOption {
	var extra []grpc.DialOption
	if clusterID != 0 {
		extra = rpc.WithClusterID(clusterID)
	}
	return rpc.DialOptions(append(extra, s.tlsDial()...)...)
}

// tlsDial are the TLS options alone (none when TLS is off), for the
// servers' own connections (ctlserver and groupserver Config.Dial).
func (s *serverTLSFlags) tlsDial() []grpc.DialOption {
	if s.creds == nil {
		return nil
	}
	return s.creds.PeerDial()
}

// serverOptions are the options of this process's gRPC server in cluster
// clusterID.
func (s *serverTLSFlags) serverOptions(clusterID uint64, log *slog.Logger) []grpc.ServerOption {
	opts := rpc.CheckClusterID(clusterID, log)
	if s.creds != nil {
		opts = append(opts, s.creds.ServerOptions(clusterID)...)
	}
	return rpc.ServerOptions(opts...)
}

// guard is the auth guard of this process's server in cluster clusterID,
// enforcing what view holds. Without TLS auth cannot be enabled (the
// controller refuses, ErrAuthNeedsTLS) and no caller can prove it is a
// peer, so a plaintext process only audits: it enforces the state "auth
// off", whatever view holds.
func (s *serverTLSFlags) guard(clusterID uint64, view *auth.Holder, log *slog.Logger) *auth.Guard {
	if s.creds == nil {
		off := auth.NewView(nil)
		return auth.NewGuard(auth.GuardConfig{View: func() *auth.View { return off }, Logger: log})
	}
	return auth.NewGuard(auth.GuardConfig{View: view.View, Logger: log, Unconfirmed: view.Unconfirmed,
		IsPeer: func(ctx context.Context) bool { return s.creds.IsPeer(ctx, clusterID) }})
}

// sharedPeerCA reports whether the process verifies peers with the
// clients' CAs without --allow-shared-peer-ca: the controller refuses to
// enable auth then.
func (s *serverTLSFlags) sharedPeerCA() bool {
	return s.creds != nil && s.creds.SharedPeerCA() && !s.allowSharedPeerCA
}

// clientCertAuth reports whether the process serves TLS and requires
// client certificates: the controller enables auth only then.
func (s *serverTLSFlags) clientCertAuth() bool { return s.creds != nil && s.creds.ClientCertAuth() }

// reloadOnHangup reads creds' files again on every SIGHUP until ctx ends
// (they are also read again when they change; SIGHUP makes it immediate).
// A failed reload keeps the certificates in use and says why.
func reloadOnHangup(ctx context.Context, creds *rpc.TLS, log *slog.Logger) {
	onHangup(ctx, func() {
		if err := creds.Reload(); err != nil {
			log.Error("SIGHUP: cannot reload the TLS files; keeping the certificates in use", "err", err)
		} else {
			log.Info("SIGHUP: TLS files reloaded")
		}
	})
}

// hangupWithoutTLS keeps SIGHUP from ending a process without TLS, which
// has nothing to reload (Go's default for SIGHUP is to exit, silently):
// operators and tools send it to reload a service, and a replica killed by
// it says nothing. Until ctx ends.
func hangupWithoutTLS(ctx context.Context, log *slog.Logger) {
	onHangup(ctx, func() { log.Info("SIGHUP: nothing to reload (TLS is off)") })
}

// onHangup calls fn on every SIGHUP the process gets until ctx ends
// (SIGHUP then no longer ends the process).
func onHangup(ctx context.Context, fn func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				fn()
			}
		}
	}()
}

// clientTLSFlags are the TLS flags of the commands that talk to a cluster
// (etcdctl's names).
type clientTLSFlags struct {
	cacert, cert, key string
}

func (c *clientTLSFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.cacert, "cacert", "", "TLS: verify the servers with these CA certificates (PEM); TLS is on when any TLS flag is given")
	f.StringVar(&c.cert, "cert", "", "TLS: client certificate (PEM), for servers started with --client-cert-auth")
	f.StringVar(&c.key, "key", "", "TLS: the key of --cert (PEM)")
}

// dial returns the TLS dial option (none when no TLS flag is given).
func (c *clientTLSFlags) dial() ([]grpc.DialOption, error) {
	if c.cacert == "" && c.cert == "" && c.key == "" {
		return nil, nil
	}
	cfg, err := rpc.ClientTLS(c.cacert, c.cert, c.key)
	if err != nil {
		return nil, usageError(err)
	}
	return []grpc.DialOption{rpc.WithTLS(cfg)}, nil
}
