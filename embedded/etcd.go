package embedded

import (
	"fmt"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdConfig describes a one-member embedded etcd.
type EtcdConfig struct {
	Name string // default "default"
	Dir  string // data directory, required
	// ClientURL is where clients connect; AdvertiseURL, if set, is what
	// the member advertises instead. PeerURL is the (unused, one-member)
	// peer listener. Zero URLs get free loopback ports.
	ClientURL, AdvertiseURL, PeerURL url.URL
	// LogLevel is etcd's zap level; "" silences etcd entirely.
	LogLevel string
	// ReadyTimeout defaults to 30 s.
	ReadyTimeout time.Duration
	// ClientTLS, when set, makes the client listener mutual TLS (TLS 1.3,
	// https URLs): clients must present a certificate from CAFile. With
	// etcd auth on (SetupEtcdAuth) the certificate's CommonName is the
	// etcd user.
	ClientTLS *EtcdTLS
	// Configure, when set, adjusts the embed.Config last.
	Configure func(*embed.Config)
}

// EtcdTLS are the PEM files of a TLS listener: the CA clients must chain
// to, and the server's certificate and key.
type EtcdTLS struct {
	CAFile, CertFile, KeyFile string
}

// StartEtcd starts the member and waits until it serves. The caller
// closes the returned *embed.Etcd.
func StartEtcd(cfg EtcdConfig) (*embed.Etcd, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("embedded etcd: no data directory")
	}
	ec := embed.NewConfig()
	if cfg.Name != "" {
		ec.Name = cfg.Name
	}
	ec.Dir = cfg.Dir
	if cfg.LogLevel == "" {
		ec.LogLevel = "error"
		ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	} else {
		ec.LogLevel = cfg.LogLevel
	}
	client, peer := cfg.ClientURL, cfg.PeerURL
	clientScheme := "http"
	if cfg.ClientTLS != nil {
		clientScheme = "https"
		if client.Host != "" && client.Scheme != "https" {
			return nil, fmt.Errorf("embedded etcd: client URL %s must be https with TLS", client.String())
		}
		ec.ClientTLSInfo = transport.TLSInfo{
			CertFile: cfg.ClientTLS.CertFile, KeyFile: cfg.ClientTLS.KeyFile,
			TrustedCAFile: cfg.ClientTLS.CAFile, ClientCertAuth: true,
		}
		ec.TlsMinVersion = "TLS1.3"
	}
	for _, u := range []*url.URL{&client, &peer} {
		if u.Host == "" {
			scheme := "http" // the one-member peer listener stays on loopback
			if u == &client {
				scheme = clientScheme
			}
			free, err := FreeLoopbackURL(scheme)
			if err != nil {
				return nil, fmt.Errorf("embedded etcd: %w", err)
			}
			*u = free
		}
	}
	advertise := cfg.AdvertiseURL
	if advertise.Host == "" {
		advertise = client
	}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{client}, []url.URL{advertise}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	// No metrics or pprof listeners: nothing but the two ports asked for.
	ec.ListenMetricsUrls = nil
	if cfg.Configure != nil {
		cfg.Configure(ec)
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: %w", err)
	}
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(timeout):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after %s", timeout)
	}
}

// FreeLoopbackURL reserves a loopback port and closes it again before use;
// the race with another process is accepted for local tools and tests.
func FreeLoopbackURL(scheme string) (url.URL, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, fmt.Errorf("reserve a loopback port: %w", err)
	}
	defer ln.Close()
	return url.URL{Scheme: scheme, Host: ln.Addr().String()}, nil
}
