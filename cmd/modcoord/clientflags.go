package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/pki"
)

const defaultCoordinator = "https://127.0.0.1:7070"

// clientOptions are the flags of every command that talks to a cluster.
type clientOptions struct {
	coordinator    string
	tls            tlsFiles
	serverName     string
	connectTimeout time.Duration
}

func addClientFlags(cmd *cobra.Command, o *clientOptions) {
	fs := cmd.Flags()
	addCoordinatorFlags(fs, &o.coordinator, &o.tls, pki.RoleUser)
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 2*time.Second,
		"give up when no coordinator accepts a TCP connection within this time")
	bindEnv(fs, "connect-timeout", "MODCOORD_CONNECT_TIMEOUT")
	// As kubectl's flag of the same name: reach the API at an address its
	// certificate does not name (a Service's ClusterIP, a tunnel) while
	// still verifying the certificate against a name it does.
	fs.StringVar(&o.serverName, "tls-server-name", "", "verify the coordinators' certificate against this DNS name instead of the --coordinator host (e.g. modcoord.NAMESPACE.svc)")
	bindEnv(fs, "tls-server-name", "MODCOORD_TLS_SERVER_NAME")
}

// addCoordinatorFlags adds --coordinator and the client certificate
// flags (--tls-dir, --ca, --cert, --key), shared by the client commands
// (role user) and worker (role worker).
func addCoordinatorFlags(fs *pflag.FlagSet, addr *string, tls *tlsFiles, role pki.Role) {
	fs.StringVar(addr, "coordinator", defaultCoordinator, "coordinator API URLs (https), comma-separated (--addr and --coordinators are accepted too)")
	bindEnv(fs, "coordinator", "MODCOORD_COORDINATOR", "MODCOORD_ADDR")
	addClientTLSFlags(fs, tls, role)
}

// client checks that some coordinator accepts a connection, then returns
// an API client for them. The check is what makes a dead address fail in
// --connect-timeout instead of after the client's whole retry schedule
// (about 11 s), which is meant to outlast a raft election, not a typo.
func (o *clientOptions) client(ctx context.Context, e env) (*coordinator.Client, error) {
	if o.connectTimeout <= 0 {
		return nil, usageErrorf("--connect-timeout %s: need a positive duration", o.connectTimeout)
	}
	addrs := splitList(o.coordinator)
	if err := probeCoordinators(ctx, addrs, o.connectTimeout); err != nil {
		return nil, err
	}
	creds, err := o.tls.load(pki.RoleUser)
	if err != nil {
		return nil, err
	}
	conf, err := coordinator.ClientTLS(creds)
	if err != nil {
		return nil, err
	}
	if o.serverName != "" {
		if len(o.serverName) > 253 || strings.ContainsAny(o.serverName, "/: ") {
			return nil, usageErrorf("--tls-server-name %.80q: give a DNS name such as modcoord.default.svc", o.serverName)
		}
		conf.ServerName = o.serverName
	}
	// Connections made later (a follower fails over, a watch runs for
	// hours) get the same dial limit.
	c, err := coordinator.NewClient(addrs, conf, coordinator.WithDialTimeout(o.connectTimeout), coordinator.WithTimeout(30*time.Second))
	if err != nil {
		return nil, usageErrorf("--coordinator: %v", err)
	}
	return c, nil
}

// probeCoordinators returns nil as soon as one of addrs accepts a TCP
// connection, and an *unreachableError naming every address and why it
// failed if none does within timeout.
func probeCoordinators(ctx context.Context, addrs []string, timeout time.Duration) error {
	if len(addrs) == 0 {
		return usageErrorf("--coordinator is empty: give at least one coordinator API URL")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	errs := make(chan error, len(addrs))
	for _, a := range addrs {
		go func() { errs <- dialOnce(ctx, a) }()
	}
	var failed []error
	for range addrs {
		err := <-errs
		if err == nil {
			return nil
		}
		failed = append(failed, err)
	}
	return &unreachableError{fmt.Errorf("no coordinator reachable within %s: %w", timeout, errors.Join(failed...))}
}

// dialOnce opens and closes a TCP connection to a coordinator URL.
func dialOnce(ctx context.Context, addr string) error {
	hostport, err := dialTarget(addr)
	if err != nil {
		return usageErrorf("coordinator %q: %v", addr, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = errors.New("connection timed out")
		}
		return fmt.Errorf("coordinator %s: %w", addr, err)
	}
	return conn.Close()
}

// dialTarget is the host:port a coordinator URL (or bare host:port, as
// coordinator.NewClient accepts) connects to.
func dialTarget(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", err
	}
	if u.Host == "" {
		return "", errors.New("no host")
	}
	if u.Port() != "" {
		return u.Host, nil
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}
