package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mustLocal makes a throwaway PKI in a temp dir.
func mustLocal(t *testing.T) *Local {
	t.Helper()
	l, err := EnsureDir(filepath.Join(t.TempDir(), "pki"), EnsureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustCreds(t *testing.T, l *Local, role Role) *Credentials {
	t.Helper()
	c, err := l.Credentials(role)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// uncheckedCreds loads files without LoadCredentials' validity check, to
// present certificates a careful loader would refuse (an expired one).
func uncheckedCreds(t *testing.T, f Files) *Credentials {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := loadCert(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &Credentials{CAs: pool, Cert: pair}
}

// handshake runs one TLS handshake over loopback TCP and returns the
// server's and the client's errors. In TLS 1.3 the client may finish
// before the server has judged its certificate, so the client also reads
// once: a refusal arrives there as an alert.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = tc.Write([]byte{1})
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, client)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = tc.Read(make([]byte, 1))
	}
	return <-done, clientErr
}

func TestHandshake(t *testing.T) {
	l, other := mustLocal(t), mustLocal(t)
	coord := mustCreds(t, l, RoleCoordinator)

	dir := t.TempDir()
	ca, err := LoadCA(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	expiredFiles, err := ca.Issue(RoleCoordinator, "old", []string{"127.0.0.1"},
		IssueOptions{Dir: dir, Validity: 24 * time.Hour, Now: func() time.Time { return time.Now().Add(-48 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	expired := uncheckedCreds(t, expiredFiles)

	serverFor := func(c *Credentials, allowed ...Role) *tls.Config {
		cfg, err := ServerConfig(c, allowed...)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	clientFor := func(c *Credentials, allowed ...Role) *tls.Config {
		cfg, err := ClientConfig(c, allowed...)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName = "127.0.0.1"
		return cfg
	}
	noCert := clientFor(coord, RoleCoordinator)
	noCert.Certificates = nil
	tls12 := clientFor(coord, RoleCoordinator)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	wrongHost := clientFor(coord, RoleCoordinator)
	wrongHost.ServerName = "elsewhere.example"

	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		ok             bool
		want           string // in the server's or client's error
	}{
		{"coordinator to coordinator", serverFor(coord, RoleCoordinator), clientFor(coord, RoleCoordinator), true, ""},
		{"worker allowed", serverFor(coord, RoleCoordinator, RoleWorker), clientFor(mustCreds(t, l, RoleWorker), RoleCoordinator), true, ""},
		{"wrong CA", serverFor(coord, RoleCoordinator), clientFor(mustCreds(t, other, RoleCoordinator), RoleCoordinator), false, "unknown authority"},
		{"no client certificate", serverFor(coord, RoleCoordinator), noCert, false, "certificate"},
		{"worker where only coordinators may", serverFor(coord, RoleCoordinator), clientFor(mustCreds(t, l, RoleWorker), RoleCoordinator), false, "only [coordinator]"},
		{"user cannot connect to raft", serverFor(coord, RoleCoordinator), clientFor(mustCreds(t, l, RoleUser), RoleCoordinator), false, "only [coordinator]"},
		{"expired client certificate", serverFor(coord, RoleCoordinator), clientFor(expired, RoleCoordinator), false, "expired"},
		{"expired server certificate", serverFor(expired, RoleCoordinator), clientFor(coord, RoleCoordinator), false, "expired"},
		{"server of the wrong role", serverFor(mustCreds(t, l, RoleNATS), RoleCoordinator), clientFor(coord, RoleCoordinator), false, "only [coordinator]"},
		{"server of another CA", serverFor(mustCreds(t, other, RoleCoordinator), RoleCoordinator), clientFor(coord, RoleCoordinator), false, "unknown authority"},
		{"server not valid for the dialed host", serverFor(coord, RoleCoordinator), wrongHost, false, "elsewhere.example"},
		{"TLS 1.2 refused", serverFor(coord, RoleCoordinator), tls12, false, "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serr, cerr := handshake(t, tc.server, tc.client)
			if tc.ok {
				if serr != nil || cerr != nil {
					t.Fatalf("want success; server: %v, client: %v", serr, cerr)
				}
				return
			}
			if serr == nil && cerr == nil {
				t.Fatal("handshake succeeded, want refusal")
			}
			if msg := errors.Join(serr, cerr).Error(); !strings.Contains(msg, tc.want) {
				t.Fatalf("errors %q do not mention %q", msg, tc.want)
			}
		})
	}
}

func TestConfigBuildersRefuse(t *testing.T) {
	l := mustLocal(t)
	user := mustCreds(t, l, RoleUser)
	coord := mustCreds(t, l, RoleCoordinator)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"server allows nobody", func() error { _, err := ServerConfig(coord); return err }()},
		{"client allows nobody", func() error { _, err := ClientConfig(coord); return err }()},
		{"unknown role", func() error { _, err := ClientConfig(coord, "admin"); return err }()},
		{"user certificate serving", func() error { _, err := ServerConfig(user, RoleUser); return err }()},
		{"nil credentials", func() error { _, err := ServerConfig(nil, RoleUser); return err }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("want an error")
			}
		})
	}
	cfg, err := ServerConfig(coord, RoleCoordinator)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("server config: min version %x, client auth %v", cfg.MinVersion, cfg.ClientAuth)
	}
}

func TestLoadCredentialsRefusesExpired(t *testing.T) {
	l := mustLocal(t)
	ca, err := LoadCA(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.Issue(RoleWorker, "old", nil, IssueOptions{Validity: time.Hour, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = LoadCredentials(f)
	if err == nil || !strings.Contains(err.Error(), f.Cert) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("got %v, want an expiry error naming %s", err, f.Cert)
	}
	// And a certificate of another CA is refused by name too.
	other := mustLocal(t)
	mixed := l.Files(RoleWorker)
	mixed.CA = other.Files(RoleWorker).CA
	if _, err := LoadCredentials(mixed); err == nil || !strings.Contains(err.Error(), mixed.Cert) {
		t.Fatalf("got %v, want a chain error naming %s", err, mixed.Cert)
	}
	// A key of another certificate.
	mixed = l.Files(RoleWorker)
	mixed.Key = l.Files(RoleNATS).Key
	if _, err := LoadCredentials(mixed); err == nil || !strings.Contains(err.Error(), "matching pair") {
		t.Fatalf("got %v, want a key mismatch", err)
	}
	if err := os.Remove(l.Files(RoleUser).Cert); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Credentials(RoleUser); err == nil || !strings.Contains(err.Error(), "modcoord certs") {
		t.Fatalf("got %v, want a missing-file error with the fix", err)
	}
}
