package embedded_test

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/modcoord/modcoord/embedded"
	"github.com/modcoord/modcoord/pki"
)

func testPKI(t *testing.T) *pki.Local {
	t.Helper()
	l, err := pki.EnsureDir(filepath.Join(t.TempDir(), "pki"), pki.EnsureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func creds(t *testing.T, l *pki.Local, role pki.Role) *pki.Credentials {
	t.Helper()
	c, err := l.Credentials(role)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secureEtcd starts a TLS etcd and, unless noAuth, sets up auth for
// cluster c1 as the etcd server's own certificate. It returns the https
// endpoint.
func secureEtcd(t *testing.T, l *pki.Local, noAuth bool) string {
	t.Helper()
	f := l.Files(pki.RoleEtcd)
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: filepath.Join(t.TempDir(), "etcd"),
		ClientTLS: &embedded.EtcdTLS{CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	ep := "https://" + e.Clients[0].Addr().String()
	if !noAuth {
		admin := etcdAs(t, l, pki.RoleEtcd, ep)
		for range 2 { // the second run, with auth on, shows it is idempotent
			if err := embedded.SetupEtcdAuth(ctxT(t), admin, "c1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ep
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func etcdWith(t *testing.T, cfg *tls.Config, ep string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: cfg, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func etcdAs(t *testing.T, l *pki.Local, role pki.Role, ep string) *clientv3.Client {
	t.Helper()
	cfg, err := pki.ClientConfig(creds(t, l, role), pki.RoleEtcd)
	if err != nil {
		t.Fatal(err)
	}
	return etcdWith(t, cfg, ep)
}

const (
	assignmentKey = "/modcoord/c1/assignments/job-1"
	workerKey     = "/modcoord/c1/workers/w0"
)

// TestAdversarialEtcdWorkerCannotWriteAssignment: with auth set up, a
// worker's certificate reads assignments and writes registrations, and
// etcd refuses its write of an assignment; a user's or the NATS server's
// certificate gets nothing.
func TestAdversarialEtcdWorkerCannotWriteAssignment(t *testing.T) {
	l := testPKI(t)
	ep := secureEtcd(t, l, false)
	coord, worker := etcdAs(t, l, pki.RoleCoordinator, ep), etcdAs(t, l, pki.RoleWorker, ep)

	if _, err := coord.Put(ctxT(t), assignmentKey, "{}"); err != nil {
		t.Fatalf("coordinator writes an assignment: %v", err)
	}
	if _, err := worker.Get(ctxT(t), "/modcoord/c1/assignments/", clientv3.WithPrefix()); err != nil {
		t.Fatalf("worker reads assignments: %v", err)
	}
	if _, err := worker.Put(ctxT(t), workerKey, "{}"); err != nil {
		t.Fatalf("worker registers: %v", err)
	}
	if _, err := coord.Get(ctxT(t), workerKey); err != nil {
		t.Fatalf("coordinator reads registrations: %v", err)
	}
	for _, tc := range []struct {
		name string
		cli  *clientv3.Client
		op   func(*clientv3.Client) error
	}{
		{"worker writes an assignment", worker, func(c *clientv3.Client) error { _, err := c.Put(ctxT(t), assignmentKey, "forged"); return err }},
		{"worker deletes an assignment", worker, func(c *clientv3.Client) error { _, err := c.Delete(ctxT(t), assignmentKey); return err }},
		{"worker writes in a txn", worker, func(c *clientv3.Client) error {
			_, err := c.Txn(ctxT(t)).Then(clientv3.OpPut(workerKey, "{}"), clientv3.OpPut(assignmentKey, "forged")).Commit()
			return err
		}},
		{"worker writes another cluster", worker, func(c *clientv3.Client) error { _, err := c.Put(ctxT(t), "/modcoord/c2/workers/w0", "{}"); return err }},
		{"worker writes outside modcoord", worker, func(c *clientv3.Client) error { _, err := c.Put(ctxT(t), "/x", "{}"); return err }},
		{"coordinator writes another cluster", coord, func(c *clientv3.Client) error {
			_, err := c.Put(ctxT(t), "/modcoord/c2/assignments/j", "{}")
			return err
		}},
		{"worker disables auth", worker, func(c *clientv3.Client) error { _, err := c.AuthDisable(ctxT(t)); return err }},
		{"coordinator adds a user", coord, func(c *clientv3.Client) error { _, err := c.UserAdd(ctxT(t), "mallory", "pw"); return err }},
		{"user certificate reads", etcdAs(t, l, pki.RoleUser, ep), func(c *clientv3.Client) error { _, err := c.Get(ctxT(t), assignmentKey); return err }},
		{"nats certificate reads", etcdAs(t, l, pki.RoleNATS, ep), func(c *clientv3.Client) error { _, err := c.Get(ctxT(t), assignmentKey); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op(tc.cli)
			if err == nil {
				t.Fatal("etcd allowed it")
			}
			if !errors.Is(err, rpctypes.ErrPermissionDenied) && !errors.Is(err, rpctypes.ErrUserNotFound) && !strings.Contains(err.Error(), "permission denied") {
				t.Fatalf("want permission denied, got %v", err)
			}
		})
	}
	if r, err := coord.Get(ctxT(t), assignmentKey); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "{}" {
		t.Fatalf("the assignment changed: %v %v", r, err)
	}
}

// TestAdversarialEtcdRefusesClientsWithoutClusterCert: no client
// certificate, one of another CA, or plain HTTP do not get in.
func TestAdversarialEtcdRefusesClientsWithoutClusterCert(t *testing.T) {
	l, other := testPKI(t), testPKI(t)
	ep := secureEtcd(t, l, true) // even before auth is on, TLS keeps them out
	noCert, err := pki.ClientConfig(creds(t, l, pki.RoleWorker), pki.RoleEtcd)
	if err != nil {
		t.Fatal(err)
	}
	noCert.Certificates = nil
	// Trusts the right server, presents a certificate of another CA.
	foreign, err := pki.ClientConfig(creds(t, other, pki.RoleCoordinator), pki.RoleEtcd)
	if err != nil {
		t.Fatal(err)
	}
	foreign.RootCAs = creds(t, l, pki.RoleWorker).CAs
	for _, tc := range []struct {
		name string
		cli  *clientv3.Client
	}{
		{"no client certificate", etcdWith(t, noCert, ep)},
		{"certificate of another CA", etcdWith(t, foreign, ep)},
		{"plain HTTP", etcdWith(t, nil, strings.Replace(ep, "https://", "http://", 1))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if _, err := tc.cli.Put(ctx, assignmentKey, "forged"); err == nil {
				t.Fatal("etcd accepted the write")
			}
		})
	}
	if r, err := etcdAs(t, l, pki.RoleCoordinator, ep).Get(ctxT(t), assignmentKey); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("after the attempts: %v %v", r, err)
	}
}

// secureNATS starts NATS as local does: mutual TLS, only worker
// certificates, mapped to the ring user.
func secureNATS(t *testing.T, l *pki.Local) string {
	t.Helper()
	cfg, err := pki.ServerConfig(creds(t, l, pki.RoleNATS), pki.RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	s, err := embedded.StartNATS(embedded.NATSConfig{TLS: cfg, CertUsers: true,
		Users: []*server.User{{Username: pki.NATSUser(pki.RoleWorker), Permissions: embedded.RingPermissions()}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { embedded.StopNATS(s) })
	return s.ClientURL()
}

func natsTLS(t *testing.T, c *pki.Credentials) *tls.Config {
	t.Helper()
	cfg, err := pki.ClientConfig(c, pki.RoleNATS)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestAdversarialNATSRefusesClientsWithoutClusterCert: without a worker
// certificate of the cluster CA there is no connection, password or not.
func TestAdversarialNATSRefusesClientsWithoutClusterCert(t *testing.T) {
	l, other := testPKI(t), testPKI(t)
	url := secureNATS(t, l)
	worker := creds(t, l, pki.RoleWorker)
	nc, err := nats.Connect(url, nats.Secure(natsTLS(t, worker)))
	if err != nil {
		t.Fatalf("worker certificate: %v", err)
	}
	nc.Close()

	noCert := natsTLS(t, worker)
	noCert.Certificates = nil
	foreign := natsTLS(t, creds(t, other, pki.RoleWorker))
	foreign.RootCAs = worker.CAs
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"no TLS, password", []nats.Option{nats.UserInfo(pki.NATSUser(pki.RoleWorker), "")}},
		{"no client certificate", []nats.Option{nats.Secure(noCert)}},
		{"worker certificate of another CA", []nats.Option{nats.Secure(foreign)}},
		{"coordinator certificate", []nats.Option{nats.Secure(natsTLS(t, creds(t, l, pki.RoleCoordinator)))}},
		{"user certificate", []nats.Option{nats.Secure(natsTLS(t, creds(t, l, pki.RoleUser)))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(url, append(tc.opts, nats.Timeout(3*time.Second), nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
		})
	}
}

// TestAdversarialNATSWorkerOnlyOnRingSubjects: a worker publishes and
// subscribes on modcoord.> and nowhere else.
func TestAdversarialNATSWorkerOnlyOnRingSubjects(t *testing.T) {
	l := testPKI(t)
	url := secureNATS(t, l)
	errs := make(chan error, 16)
	connect := func() *nats.Conn {
		nc, err := nats.Connect(url, nats.Secure(natsTLS(t, creds(t, l, pki.RoleWorker))),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	a, b := connect(), connect()
	ring := "modcoord.job-1.g3.ring.1"
	sub, err := b.SubscribeSync(ring)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ring, []byte("chunk")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != "chunk" {
		t.Fatalf("ring message: %v, %v", m, err)
	}

	wantViolation := func(what string) {
		t.Helper()
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s: %v, want a permission violation", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the server allowed it", what)
		}
	}
	for _, subject := range []string{"elsewhere", "$SYS.REQ.SERVER.PING", "_INBOX.x"} {
		if err := a.Publish(subject, []byte("x")); err != nil {
			t.Fatal(err)
		}
		a.Flush()
		wantViolation("publish to " + subject)
		if _, err := a.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		a.Flush()
		wantViolation("subscribe to " + subject)
	}
}
