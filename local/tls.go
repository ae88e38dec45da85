package local

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/modcoord/modcoord/embedded"
	"github.com/modcoord/modcoord/pki"
)

// The local cluster's etcd and NATS run as a real cluster's should (issue
// 14): mutual TLS with certificates from a throwaway CA in <Dir>/pki
// (pki.EnsureDir), etcd auth with one user per role (embedded.SetupEtcdAuth),
// NATS users mapped from certificates with the ring's subjects only, and
// assignments signed by the coordinators and verified by the workers.

// localCluster is the etcd key scope of a local cluster.
const localCluster = "local"

// PKI is the local cluster's certificate directory.
func (c *Cluster) PKI() *pki.Local { return c.pki }

func (c *Cluster) ensurePKI() error {
	l, err := pki.EnsureDir(filepath.Join(c.opts.Dir, "pki"), pki.EnsureOptions{})
	if err != nil {
		return err
	}
	c.pki = l
	return nil
}

func (c *Cluster) creds(role pki.Role) (*pki.Credentials, error) {
	cr, err := c.pki.Credentials(role)
	if err != nil {
		return nil, fmt.Errorf("local %s credentials: %w", role, err)
	}
	return cr, nil
}

// startSecureNATS runs NATS over mutual TLS where only worker
// certificates connect, as the worker user, on the ring's subjects.
func startSecureNATS(l *pki.Local) (*server.Server, error) {
	natsCreds, err := l.Credentials(pki.RoleNATS)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := pki.ServerConfig(natsCreds, pki.RoleWorker)
	if err != nil {
		return nil, err
	}
	return embedded.StartNATS(embedded.NATSConfig{
		TLS: tlsCfg, CertUsers: true,
		Users: []*server.User{{Username: pki.NATSUser(pki.RoleWorker), Permissions: embedded.RingPermissions()}},
	})
}

// startSecureEtcd runs etcd over mutual TLS and sets up its users, roles
// and auth as the etcd server's own certificate (the root user).
func startSecureEtcd(l *pki.Local, dir string) (*embed.Etcd, error) {
	f := l.Files(pki.RoleEtcd)
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: dir, ClientTLS: &embedded.EtcdTLS{CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key}})
	if err != nil {
		return nil, err
	}
	admin, err := etcdClient(l, pki.RoleEtcd, "https://"+e.Clients[0].Addr().String())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = embedded.SetupEtcdAuth(ctx, admin, localCluster)
		cancel()
		admin.Close()
	}
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("etcd auth: %w", err)
	}
	return e, nil
}

// etcdClient connects to endpoint with role's certificate, accepting only
// the cluster's etcd server.
func etcdClient(l *pki.Local, role pki.Role, endpoint string) (*clientv3.Client, error) {
	creds, err := l.Credentials(role)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := pki.ClientConfig(creds, pki.RoleEtcd)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client (%s): %w", role, err)
	}
	return cli, nil
}
