package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/pki"
)

func TestCertsCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bundle")
	code, stdout, stderr := run(context.Background(), nil, "certs", "--out", out,
		"--coordinator-hosts", "c0.example,10.0.0.2", "--workers", "w0,w1", "--etcd-hosts", "etcd", "--nats-hosts", "nats")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, f := range []string{"ca.crt", "ca.key", "coordinator-c0.example.crt", "coordinator-10.0.0.2.key", "worker-w1.crt", "user-admin.crt", "etcd-etcd.crt", "nats-nats.key"} {
		if !strings.Contains(stdout, filepath.Join(out, f)) {
			t.Errorf("output does not list %s:\n%s", f, stdout)
		}
	}
	c, err := pki.LoadCredentials(pki.FilesFor(out, pki.RoleCoordinator, "c0.example"))
	if err != nil || c.Identity.Role != pki.RoleCoordinator || c.Cert.Leaf.Subject.CommonName != "coordinator" {
		t.Fatalf("coordinator certificate: %+v, %v", c, err)
	}
	// A second run would replace the CA under a running cluster.
	if code, _, stderr := run(context.Background(), nil, "certs", "--out", out, "--coordinator-hosts", "c0"); code == exitOK || !strings.Contains(stderr, "already holds a CA") {
		t.Fatalf("second run: exit %d, %s", code, stderr)
	}
	if code, _, _ := run(context.Background(), nil, "certs", "--out", t.TempDir()); code != exitUsage {
		t.Fatalf("no coordinator hosts: exit %d", code)
	}
	// --tls-dir with several certificates of the role, and with http etcd.
	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "worker-w0.crt", "worker-w0.key"} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, stderr := run(context.Background(), map[string]string{"MODCOORD_TOKEN": "t"}, "worker", "--tls-dir", out, "--metrics", ""); code == exitOK || !strings.Contains(stderr, "2 worker certificates") {
		t.Fatalf("ambiguous --tls-dir: exit %d, %s", code, stderr)
	}
	if code, _, stderr := run(context.Background(), map[string]string{"MODCOORD_TOKEN": "t"}, "worker", "--tls-dir", dir, "--metrics", "", "--etcd", "http://127.0.0.1:1"); code != exitUsage || !strings.Contains(stderr, "https://") {
		t.Fatalf("http etcd with --tls-dir: exit %d, %s", code, stderr)
	}
}
