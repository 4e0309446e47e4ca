package cluster_test

import (
	"context"
	"crypto/tls"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/api/transportpb"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/cluster"
	"github.com/shardkv/shardkv/internal/devcert"
	"github.com/shardkv/shardkv/internal/rpc"
	"github.com/shardkv/shardkv/transport"
)

// TestTLSCluster runs a cluster with TLS on every connection (clients,
// raft between replicas, pulls between groups) and client certificates
// required: reads and writes through a migration work with the right
// certificates; plaintext clients, clients of another CA, and replicas of
// another CA are refused.
func TestTLSCluster(t *testing.T) {
	dir := t.TempDir()
	var local *devcert.Local
	h := start(t, cluster.Options{Groups: 2, TLS: func(id uint64) (*rpc.TLS, error) {
		var err error
		if local, err = devcert.WriteLocal(filepath.Join(dir, "tls"), rpc.PeerURI(id)); err != nil {
			return nil, err
		}
		return rpc.LoadTLS(rpc.TLSFiles{Cert: local.NodeCert, Key: local.NodeKey, TrustedCA: local.CAFile, ClientCertAuth: true}, testLogger())
	}})
	other, err := devcert.WriteLocal(filepath.Join(dir, "other"), nil)
	if err != nil {
		t.Fatal(err)
	}
	clientTLS := func(ca, cert, key string) *tls.Config {
		cfg, err := rpc.ClientTLS(ca, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	h.join(1)
	cl := h.client(client.WithTLS(clientTLS(local.CAFile, local.ClientCert, local.ClientKey)))
	ks := keys(20)
	for _, k := range ks {
		h.put(cl, k, k+"|")
	}
	h.join(2) // half the shards move to group 2, pulled over TLS
	for _, k := range ks {
		h.check(cl, k, k+"|")
		h.appendTo(cl, k, "a")
	}
	h.waitSettled()
	if moved := len(h.latest().Groups); moved != 2 {
		t.Fatalf("%d groups in the configuration, want 2", moved)
	}
	for _, k := range ks {
		h.check(cl, k, k+"|a")
	}

	refused := func(what string, opts ...client.Option) {
		t.Helper()
		ctx, cancel := context.WithTimeout(h.ctx, 2*time.Second)
		defer cancel()
		c, err := client.New(ctx, h.c.ControllerAddrs(), opts...)
		if err == nil {
			c.Close()
			t.Errorf("%s: connected to the cluster", what)
		}
	}
	refused("a plaintext client")
	refused("a client without a certificate", client.WithTLS(clientTLS(local.CAFile, "", "")))
	refused("a client with another CA's certificate", client.WithTLS(clientTLS(local.CAFile, other.ClientCert, other.ClientKey)))

	// A replica with another CA's certificate (naming this cluster) cannot
	// talk raft to group 1: neither its membership question nor its raft
	// messages get through.
	foreignCA, err := devcert.NewCA("foreign")
	if err != nil {
		t.Fatal(err)
	}
	fcert, fkey, err := foreignCA.IssueFiles(dir, "foreign-node", devcert.Leaf{CommonName: "foreign", Hosts: []string{"127.0.0.1"},
		URIs: []*url.URL{rpc.PeerURI(h.c.ClusterID())}, Server: true, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := rpc.LoadTLS(rpc.TLSFiles{Cert: fcert, Key: fkey, TrustedCA: local.CAFile}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	target := h.c.GroupAddrs(1)[0]
	raftStream := func(dial ...grpc.DialOption) error {
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		defer cancel()
		conn, err := grpc.NewClient(target, rpc.DialOptions(append(rpc.WithClusterID(h.c.ClusterID()), dial...)...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st, err := transportpb.NewRaftClient(conn).Stream(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&transportpb.Batch{}); err != nil {
			_, err = st.CloseAndRecv()
			return err
		}
		_, err = st.CloseAndRecv()
		return err
	}
	if err := raftStream(foreign.PeerDial()...); err == nil {
		t.Error("a replica with another CA's certificate sent raft messages")
	}
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	if _, err := transport.AskMember(ctx, target, 1, 9, rpc.DialOptions(foreign.PeerDial()...)...); err == nil {
		t.Error("a replica with another CA's certificate was answered by the raft service")
	}
	// A client's certificate of the right CA does not make a peer.
	if err := raftStream(rpc.WithTLS(clientTLS(local.CAFile, local.ClientCert, local.ClientKey))); !rpc.IsNotPeer(err) {
		t.Errorf("raft stream with a client certificate: %v, want rpc.ErrNotPeer", err)
	}
}
