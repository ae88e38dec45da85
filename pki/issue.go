package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Files are the paths of one component's TLS material: the cluster CA it
// trusts and its own certificate and key.
type Files struct {
	CA, Cert, Key string
}

// FilesFor is where a PKI directory keeps the certificate of role/name:
// <dir>/<role>-<name>.crt and .key, beside <dir>/ca.crt.
func FilesFor(dir string, role Role, name string) Files {
	base := filepath.Join(dir, string(role)+"-"+name)
	return Files{CA: filepath.Join(dir, CACertFile), Cert: base + ".crt", Key: base + ".key"}
}

// IssueOptions tunes Issue; the zero value is fine.
type IssueOptions struct {
	// Dir is where the files go (default: the CA's directory). A bundle
	// for another machine can be written apart from the CA key.
	Dir string
	// Validity is how long the certificate is valid (default
	// DefaultLeafValidity), cut to the CA's own expiry.
	Validity time.Duration
	// Now is the clock; tests backdate with it (default time.Now).
	Now func() time.Time
}

// Issue makes a key and a certificate for role/name, valid for hosts (DNS
// names or IP addresses; what a client checks against the address it dialed; clients need none), and
// writes them atomically, the key 0600. It overwrites an earlier
// certificate of the same role and name: that is how one renews.
func (ca *CA) Issue(role Role, name string, hosts []string, opts IssueOptions) (Files, error) {
	if _, err := ParseRole(string(role)); err != nil {
		return Files{}, fmt.Errorf("issue: %w", err)
	}
	if err := checkName(name); err != nil {
		return Files{}, fmt.Errorf("issue %s certificate: %w", role, err)
	}
	dir := opts.Dir
	if dir == "" {
		dir = ca.dir
	}
	files := FilesFor(dir, role, name)
	now := clock(opts.Now)
	notAfter := now.Add(orDefault(opts.Validity, DefaultLeafValidity))
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	serial, err := randomSerial()
	if err != nil {
		return Files{}, fmt.Errorf("issue %s/%s: %w", role, name, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The CommonName is the role: etcd takes it as the user name of a
		// client certificate, NATS maps the subject to a user (EtcdUser,
		// NATSUser), and a certificate made by a tool that cannot write
		// URI SANs (Helm) carries its role this way alone. The name is in
		// the role URI.
		Subject:   SubjectFor(role),
		NotBefore: now.Add(-clockSkew),
		NotAfter:  notAfter,
		// ECDSA keys sign; they never encipher keys.
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{roleURI(Identity{Role: role, Name: name})},
	}
	if role.servesTLS() {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, fmt.Errorf("issue %s/%s: generate key: %w", role, name, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Files{}, fmt.Errorf("issue %s/%s: sign: %w", role, name, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return Files{}, fmt.Errorf("issue %s/%s: %w", role, name, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, fmt.Errorf("issue %s/%s: %w", role, name, err)
	}
	if dir != ca.dir {
		// A bundle directory must be self-contained: copy the CA certificate.
		if err := writeFileAtomic(files.CA, encodeCert(ca.cert.Raw), 0o644); err != nil {
			return Files{}, fmt.Errorf("issue %s/%s: %w", role, name, err)
		}
	}
	if err := writeFileAtomic(files.Key, keyPEM, 0o600); err != nil {
		return Files{}, fmt.Errorf("issue %s/%s: %w", role, name, err)
	}
	if err := writeFileAtomic(files.Cert, encodeCert(der), 0o644); err != nil {
		return Files{}, fmt.Errorf("issue %s/%s: %w", role, name, err)
	}
	return files, nil
}
