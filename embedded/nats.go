package embedded

import (
	"crypto/tls"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Limits every modcoord NATS server runs with: ring chunks are far below
// 8 MiB, and a generous max_pending keeps a fast ring from having its
// subscribers cut off as slow consumers (docs/allreduce.md).
const (
	NATSMaxPayload = 8 << 20
	NATSMaxPending = 1 << 30
)

// NATSConfig describes an embedded nats-server. The zero Port picks a free
// loopback port.
type NATSConfig struct {
	Host string // default 127.0.0.1
	Port int    // 0: a random free port
	// Users and their permissions; at least one is required, since a
	// modcoord bus never runs without authentication.
	Users []*server.User
	// TLS, when set, makes every client connection use TLS; with
	// ClientAuth set to RequireAndVerifyClientCert it is mutual.
	TLS *tls.Config
	// CertUsers maps each client to the user named by its certificate's
	// subject (nats-server's verify_and_map) instead of a password: Users
	// are then subject DNs such as pki.NATSUser(pki.RoleWorker). It needs
	// TLS with client certificates required.
	CertUsers bool
	// MaxPayload and MaxPending default to NATSMaxPayload and
	// NATSMaxPending.
	MaxPayload int32
	MaxPending int64
	// HTTPPort serves /healthz when positive.
	HTTPPort int
	// Log sends the server's log to stderr.
	Log bool
	// ReadyTimeout defaults to 10 s.
	ReadyTimeout time.Duration
}

// RingSubjects is every subject the ring all-reduce uses:
// modcoord.<job>.g<generation>.ring.<rank> and modcoord.<job>.g<generation>.gather
// (allreduce.RingInbox, GatherInbox). The ring uses no request-reply, so
// no _INBOX subjects.
const RingSubjects = "modcoord.>"

// RingPermissions let a worker publish and subscribe on the ring's
// subjects and nothing else.
func RingPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{RingSubjects}},
		Subscribe: &server.SubjectPermission{Allow: []string{RingSubjects}},
	}
}

// StartNATS runs a nats-server and waits until it accepts connections.
// Stop it with StopNATS.
func StartNATS(cfg NATSConfig) (*server.Server, error) {
	if len(cfg.Users) == 0 {
		return nil, fmt.Errorf("embedded nats-server: no users configured; a modcoord bus always requires authentication")
	}
	opts := &server.Options{
		Host: cfg.Host, Port: cfg.Port, NoLog: !cfg.Log,
		Users: cfg.Users, MaxPayload: cfg.MaxPayload, MaxPending: cfg.MaxPending,
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = NATSMaxPayload
	}
	if opts.MaxPending == 0 {
		opts.MaxPending = NATSMaxPending
	}
	if cfg.HTTPPort > 0 {
		opts.HTTPHost, opts.HTTPPort = cfg.Host, cfg.HTTPPort
		if opts.HTTPHost == "" {
			opts.HTTPHost = "127.0.0.1"
		}
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLS = true
		opts.TLSVerify = cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 5
	}
	if cfg.CertUsers {
		if !opts.TLSVerify {
			return nil, fmt.Errorf("embedded nats-server: certificate users need TLS that requires client certificates")
		}
		opts.TLSMap = true
	}
	return StartNATSWithOptions(opts, cfg.ReadyTimeout)
}

// StartNATSWithOptions runs a server from raw options, for tests that need
// what NATSConfig does not offer (token or nkey auth, say). A zero Port
// picks a free one; logging follows opts.NoLog.
func StartNATSWithOptions(opts *server.Options, readyTimeout time.Duration) (*server.Server, error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	if !opts.NoLog {
		s.ConfigureLogger()
	}
	go s.Start()
	if readyTimeout <= 0 {
		readyTimeout = 10 * time.Second
	}
	if !s.ReadyForConnections(readyTimeout) {
		StopNATS(s)
		return nil, fmt.Errorf("embedded nats-server not ready after %s", readyTimeout)
	}
	return s, nil
}

// StopNATS shuts a server down and waits for it.
func StopNATS(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}
