// Package devcert makes throwaway certificate authorities and the
// certificates they sign, with Go's crypto/x509 alone: for `shardkv dev
// --tls` and for tests. Keys are ECDSA P-256 (fast to make, accepted by
// every TLS stack); nothing here is meant for a production CA.
package devcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	PEM  []byte // Cert, PEM encoded
}

// validity is how long what this package makes is valid: long enough for
// any dev cluster, short enough to be obviously throwaway.
const validity = 30 * 24 * time.Hour

// NewCA makes a self-signed CA named name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"shardkv dev"}},
		NotBefore:             time.Now().Add(-time.Hour), // clocks of a test machine may disagree slightly
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	// Hosts are the DNS names and IP addresses the certificate is valid
	// for as a server (a client certificate may have none).
	Hosts []string
	// URIs are URI subject alternative names (a peer's cluster identity,
	// see rpc.PeerURI).
	URIs []*url.URL
	// Server and Client select the extended key usages.
	Server, Client bool
}

// Issue signs a new certificate for l and returns it and its private key,
// PEM encoded.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: l.CommonName, Organization: []string{"shardkv dev"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         l.URIs,
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// IssueFiles issues a certificate for l and writes it to dir/name.pem and
// its key to dir/name-key.pem (readable by the owner only), returning both
// paths.
func (ca *CA) IssueFiles(dir, name string, l Leaf) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := ca.Issue(l)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := WriteFile(certFile, certPEM); err != nil {
		return "", "", err
	}
	return certFile, keyFile, WriteFile(keyFile, keyPEM)
}

// WriteFile replaces path with data, atomically (a temporary file renamed
// over it), so that a process reloading the file never reads half of it.
func WriteFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("devcert: %w", err)
	}
	return nil
}

// serial returns a random 128-bit serial number (RFC 5280 allows 20
// octets).
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// Local is the TLS material of a cluster on one machine, as files.
type Local struct {
	CA                    *CA
	CAFile                string // the CA's certificate
	NodeCert, NodeKey     string // every replica's: server and client, for 127.0.0.1, ::1 and localhost
	ClientCert, ClientKey string // a client's (the CLI's)
}

// WriteLocal makes a new CA and, under dir (created if needed), ca.pem,
// node.pem and node-key.pem (a certificate every replica of a cluster on
// this machine can serve and call its peers with, naming the peer
// identity peer), and client.pem and client-key.pem (a client
// certificate, CN shardkv-client). Files already there are replaced.
func WriteLocal(dir string, peer *url.URL) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := NewCA("shardkv dev CA")
	if err != nil {
		return nil, err
	}
	l := &Local{CA: ca, CAFile: filepath.Join(dir, "ca.pem")}
	if err := WriteFile(l.CAFile, ca.PEM); err != nil {
		return nil, err
	}
	node := Leaf{CommonName: "shardkv-node", Hosts: []string{"127.0.0.1", "::1", "localhost"}, Server: true, Client: true}
	if peer != nil {
		node.URIs = []*url.URL{peer}
	}
	if l.NodeCert, l.NodeKey, err = ca.IssueFiles(dir, "node", node); err != nil {
		return nil, err
	}
	if l.ClientCert, l.ClientKey, err = ca.IssueFiles(dir, "client", Leaf{CommonName: "shardkv-client", Client: true}); err != nil {
		return nil, err
	}
	return l, nil
}
