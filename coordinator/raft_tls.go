package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/modcoord/modcoord/pki"
)

const (
	// raftHandshakeTimeout bounds one inbound TLS handshake: a peer that
	// connects and stays silent must not hold a slot for long.
	raftHandshakeTimeout = 10 * time.Second
	// maxRaftHandshakes bounds handshakes in flight; beyond it new
	// connections are closed at once, so a connection flood costs at most
	// this many goroutines. Real peers number a handful and retry.
	maxRaftHandshakes = 64
)

// tlsStreamLayer is raft's stream layer over mutual TLS. Only peers whose
// certificate comes from the cluster CA and carries the coordinator role
// get through, in both directions: raft's log is the cluster's state, and
// anyone who can speak AppendEntries can rewrite it.
//
// Handshakes run in their own goroutines, each with a deadline, and only
// connections that completed one are handed to Accept: raft's accept loop
// is a single goroutine and must never wait on a slow or hostile client,
// and refused peers never reach raft's decoder at all.
type tlsStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	server    *tls.Config
	dialer    tls.Dialer
	timeout   time.Duration
	log       *slog.Logger

	conns     chan net.Conn
	acceptErr chan error
	inFlight  chan struct{} // a semaphore of maxRaftHandshakes slots
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error
}

// newTLSStreamLayer serves raft on ln. creds must be a coordinator's.
// handshakeTimeout bounds each inbound handshake.
func newTLSStreamLayer(ln net.Listener, advertise net.Addr, creds *pki.Credentials, handshakeTimeout time.Duration, log *slog.Logger) (*tlsStreamLayer, error) {
	if creds.Identity.Role != pki.RoleCoordinator {
		return nil, fmt.Errorf("raft TLS: certificate %s is a %s's; raft needs a coordinator certificate", creds.Identity, creds.Identity.Role)
	}
	server, err := pki.ServerConfig(creds, pki.RoleCoordinator)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: %w", err)
	}
	client, err := pki.ClientConfig(creds, pki.RoleCoordinator)
	if err != nil {
		return nil, fmt.Errorf("raft TLS: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &tlsStreamLayer{
		ln: ln, advertise: advertise, server: server, timeout: handshakeTimeout, log: log,
		// tls.Dialer fills ServerName from the dialed address, so each peer's
		// certificate is checked against the host the peer list names.
		dialer:    tls.Dialer{Config: client},
		conns:     make(chan net.Conn),
		acceptErr: make(chan error),
		inFlight:  make(chan struct{}, maxRaftHandshakes),
		ctx:       ctx, cancel: cancel,
	}
	go s.acceptLoop()
	return s, nil
}

func (s *tlsStreamLayer) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Hand a transient error to raft, whose loop backs off.
			select {
			case s.acceptErr <- err:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		select {
		case s.inFlight <- struct{}{}:
			go s.handshake(c)
		default:
			s.log.Warn("raft: too many TLS handshakes in flight; connection dropped", "remote", c.RemoteAddr().String())
			c.Close()
		}
	}
}

// handshake completes the server side of a TLS handshake within the
// timeout and hands the connection to Accept, or closes it.
func (s *tlsStreamLayer) handshake(c net.Conn) {
	defer func() { <-s.inFlight }()
	tc := tls.Server(c, s.server)
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		// The error names the peer's role when that was the reason; it
		// never holds key material.
		s.log.Warn("raft: peer refused", "remote", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	select {
	case s.conns <- tc:
	case <-s.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next connection that passed the TLS handshake.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case err := <-s.acceptErr:
		return nil, fmt.Errorf("raft accept: %w", err)
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting and aborts handshakes in flight.
func (s *tlsStreamLayer) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.closeErr = s.ln.Close()
	})
	return s.closeErr
}

// Addr is the address peers know this node by.
func (s *tlsStreamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer and completes the handshake (the peer must
// present a coordinator certificate valid for addr's host) within timeout.
func (s *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	c, err := s.dialer.DialContext(ctx, "tcp", string(addr))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	return c, nil
}

// checkRaftHost fails early, with the fix, when this node's own
// certificate does not name the host its peers will dial: otherwise every
// peer would refuse it with a handshake error in its own log.
func checkRaftHost(creds *pki.Credentials, raftAddr string) error {
	host, _, err := net.SplitHostPort(raftAddr)
	if err != nil {
		return fmt.Errorf("raft address %q: %w", raftAddr, err)
	}
	if err := creds.Cert.Leaf.VerifyHostname(host); err != nil {
		return fmt.Errorf("raft TLS: this coordinator's certificate (%s) is not valid for its raft address %s: %w; reissue it with that host (modcoord certs --coordinator-hosts)", creds.Identity, raftAddr, err)
	}
	return nil
}
