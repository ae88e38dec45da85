package main

import (
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/modcoord/modcoord/pki"
)

// addTLSDirFlag adds --tls-dir: the one source of a process's
// certificates (ca.crt and its role's <role>-<name>.crt/.key, as
// `modcoord certs` writes them).
func addTLSDirFlag(fs *pflag.FlagSet, dir *string, uses string) {
	fs.StringVar(dir, "tls-dir", "", "directory holding ca.crt and this component's certificate and key (from modcoord certs); "+uses)
	bindEnv(fs, "tls-dir", "MODCOORD_TLS_DIR")
}

// loadTLSDir loads role's credentials from --tls-dir ("": none).
func loadTLSDir(dir string, role pki.Role) (*pki.Credentials, error) {
	if dir == "" {
		return nil, nil
	}
	c, err := pki.LoadDir(dir, role)
	if err != nil {
		return nil, fmt.Errorf("--tls-dir: %w", err)
	}
	return c, nil
}

// newEtcdClient connects to etcd, over mutual TLS with creds' certificate
// (etcd's user is its role, see embedded.SetupEtcdAuth) when creds is set.
func newEtcdClient(endpoints string, creds *pki.Credentials) (*clientv3.Client, error) {
	// Keep-alive pings: a connection left half-open by a network partition
	// or an etcd restart (no reset reaches us) is noticed and redialed;
	// without them every call on it hung (the chaos soak's leader never
	// listed the workers again).
	cfg := clientv3.Config{Endpoints: splitList(endpoints), DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 10 * time.Second, DialKeepAliveTimeout: 5 * time.Second, Logger: zap.NewNop()}
	if creds != nil {
		for _, ep := range cfg.Endpoints {
			if !strings.HasPrefix(ep, "https://") {
				return nil, usageErrorf("--etcd %s: with --tls-dir etcd is reached over TLS; give https:// URLs", ep)
			}
		}
		tlsCfg, err := pki.ClientConfig(creds, pki.RoleEtcd)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// natsClientTLS is the TLS configuration a worker dials NATS with.
func natsClientTLS(creds *pki.Credentials) (*tls.Config, error) {
	if creds == nil {
		return nil, nil
	}
	return pki.ClientConfig(creds, pki.RoleNATS)
}
