package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// File names of the CA inside a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Default lifetimes. The CA outlives its leaves so that leaves can be
// re-issued without redistributing the CA; a year for leaves keeps a
// leaked key's usefulness bounded without weekly rotations in a training
// cluster that has no automatic renewal yet.
const (
	DefaultCAValidity   = 5 * 365 * 24 * time.Hour
	DefaultLeafValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a machine whose clock is a
	// little behind the issuer's accepts a fresh certificate.
	clockSkew = 5 * time.Minute
)

// CA is a cluster certificate authority loaded from (or created in) a directory.
type CA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// CAOptions tunes NewCA; the zero value is fine.
type CAOptions struct {
	// Validity is how long the CA is valid (default DefaultCAValidity).
	Validity time.Duration
	// Now is the clock; tests backdate with it (default time.Now).
	Now func() time.Time
}

// NewCA creates a new CA in dir (made 0700 if missing). It refuses to
// overwrite an existing CA: replacing one silently would invalidate every
// certificate the cluster uses.
func NewCA(dir string, opts CAOptions) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if exists(certPath) || exists(keyPath) {
		return nil, fmt.Errorf("new CA in %s: %s or %s already exists; use it (LoadCA) or remove the directory to start over", dir, CACertFile, CAKeyFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	now := clock(opts.Now)
	validity := orDefault(opts.Validity, DefaultCAValidity)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new CA: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial in the name tells two clusters' CAs apart in errors.
		Subject:               pkix.Name{Organization: []string{"modcoord"}, CommonName: fmt.Sprintf("modcoord cluster CA %x", serial.Bytes()[:4])},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // no intermediates: leaves only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new CA: sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new CA: parse own certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	// Key first: a crash in between leaves a key without a certificate,
	// which NewCA refuses and LoadCA reports, never a certificate whose
	// key is lost.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	if err := writeFileAtomic(certPath, encodeCert(der), 0o644); err != nil {
		return nil, fmt.Errorf("new CA: %w", err)
	}
	return &CA{dir: dir, cert: cert, key: key}, nil
}

// LoadCA loads the CA in dir and checks that its key matches its certificate.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	cert, err := loadCert(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load CA: %s is not a CA certificate", certPath)
	}
	key, err := loadKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load CA: %s does not belong to %s; restore the matching pair or regenerate the cluster's certificates", keyPath, certPath)
	}
	return &CA{dir: dir, cert: cert, key: key}, nil
}

// Dir is the directory the CA lives in.
func (ca *CA) Dir() string { return ca.dir }

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertFile is the path of the CA's certificate, the file every component
// trusts.
func (ca *CA) CertFile() string { return filepath.Join(ca.dir, CACertFile) }

func clock(now func() time.Time) time.Time {
	if now == nil {
		return time.Now()
	}
	return now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func randomSerial() (*big.Int, error) {
	// 128 random bits, as the CA/Browser baseline asks for at least 64.
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	// A leading byte for the CA's name tag even when the top bits are 0.
	return s.SetBit(s, 127, 1), nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// loadCert reads a file holding exactly one PEM certificate.
func loadCert(path string) (*x509.Certificate, error) {
	b, err := readPEMFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM CERTIFICATE block; is it a certificate file?", path)
	}
	if extra, _ := pem.Decode(rest); extra != nil {
		return nil, fmt.Errorf("%s holds more than one PEM block; give one certificate per file", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %s: %w", path, err)
	}
	return cert, nil
}

// loadKey reads an ECDSA private key (PKCS#8 or SEC 1). Errors never
// include the file's content.
func loadKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := readPEMFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block; is it a key file?", path)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s holds a %q block, not a private key", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key %s: %w", path, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s is a %T key; modcoord uses ECDSA P-256", path, key)
	}
	if ec.Curve != elliptic.P256() {
		return nil, errors.New(path + " is not a P-256 key; modcoord uses ECDSA P-256")
	}
	return ec, nil
}
