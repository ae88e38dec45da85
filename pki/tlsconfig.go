package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Credentials are one component's loaded TLS material.
type Credentials struct {
	// CAs holds the cluster CA only: peers are verified against it, never
	// against the system roots.
	CAs *x509.CertPool
	// Cert is this component's certificate chain and key.
	Cert tls.Certificate
	// Identity is the role and name Cert carries.
	Identity Identity
}

// LoadCredentials reads f (bounded, regular files only) and checks that
// the key matches the certificate, that the certificate chains to the CA
// and is valid now, and that it carries a role, so that a wrong file is
// reported at startup, naming it, instead of as a failed handshake later.
func LoadCredentials(f Files) (*Credentials, error) {
	caCert, err := loadCert(f.CA)
	if err != nil {
		return nil, fmt.Errorf("load TLS credentials: %w", err)
	}
	certPEM, err := readPEMFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("load TLS credentials: %w", err)
	}
	keyPEM, err := readPEMFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("load TLS credentials: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load TLS credentials: %s with %s: %w (are they a matching pair?)", f.Cert, f.Key, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("load TLS credentials: parse %s: %w", f.Cert, err)
		}
		pair.Leaf = leaf
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("load TLS credentials: %s is not valid under the CA in %s: %w; reissue it with modcoord certs", f.Cert, f.CA, err)
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("load TLS credentials: %s: %w", f.Cert, err)
	}
	return &Credentials{CAs: pool, Cert: pair, Identity: id}, nil
}

// ServerConfig is a TLS 1.3 server configuration that requires a client
// certificate from the cluster CA whose role is one of allowed. At least
// one role must be allowed: an empty list is a programming error, not
// "anyone".
func ServerConfig(c *Credentials, allowed ...Role) (*tls.Config, error) {
	if err := checkAllowed(c, allowed); err != nil {
		return nil, fmt.Errorf("TLS server config: %w", err)
	}
	if !c.Identity.Role.servesTLS() {
		return nil, fmt.Errorf("TLS server config: a %s certificate cannot serve TLS", c.Identity.Role)
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{c.Cert},
		ClientCAs:        c.CAs,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		VerifyConnection: RequireRole(allowed...),
	}, nil
}

// ClientConfig is a TLS 1.3 client configuration that presents c's
// certificate and accepts only a server certificate from the cluster CA,
// valid for the dialed host (ServerName, which tls.Dial and net/http fill
// in from the address), whose role is one of allowed.
func ClientConfig(c *Credentials, allowed ...Role) (*tls.Config, error) {
	if err := checkAllowed(c, allowed); err != nil {
		return nil, fmt.Errorf("TLS client config: %w", err)
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{c.Cert},
		RootCAs:          c.CAs,
		VerifyConnection: RequireRole(allowed...),
	}, nil
}

// RequireRole is a tls.Config.VerifyConnection hook that accepts a peer
// only if its verified certificate carries one of allowed. Chain and
// expiry are checked by crypto/tls before the hook runs.
func RequireRole(allowed ...Role) func(tls.ConnectionState) error {
	allowed = slices.Clone(allowed)
	return func(cs tls.ConnectionState) error {
		id, err := PeerIdentity(cs)
		if err != nil {
			return err
		}
		if !slices.Contains(allowed, id.Role) {
			return fmt.Errorf("peer %s is refused: only %v may connect here", id, allowed)
		}
		return nil
	}
}

func checkAllowed(c *Credentials, allowed []Role) error {
	if c == nil {
		return errors.New("no credentials")
	}
	if len(allowed) == 0 {
		return errors.New("no peer role allowed")
	}
	for _, r := range allowed {
		if _, err := ParseRole(string(r)); err != nil {
			return err
		}
	}
	return nil
}

// ExpiresWithin reports whether c's certificate expires within d of now.
func (c *Credentials) ExpiresWithin(d time.Duration, now time.Time) bool {
	return now.Add(d).After(c.Cert.Leaf.NotAfter)
}
