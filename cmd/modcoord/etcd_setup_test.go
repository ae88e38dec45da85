package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/embedded"
	"github.com/modcoord/modcoord/pki"
)

// TestEtcdSetupWait: --wait retries an etcd that does not answer yet, and
// once the setup succeeded stays up until the signal, then exits 0 (the
// Helm chart's sidecar next to etcd).
func TestEtcdSetupWait(t *testing.T) {
	old := etcdSetupRetry
	etcdSetupRetry = 50 * time.Millisecond
	t.Cleanup(func() { etcdSetupRetry = old })
	l := testPKI()
	env := map[string]string{"MODCOORD_TLS_DIR": l.Dir}

	// Nothing listens: it keeps trying until interrupted.
	dead := "https://" + closedAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	code, _, stderr := run(ctx, env, "etcd-setup", "--wait", "--timeout", "100ms", "--etcd", dead, "--cluster", "c1")
	if code != exitInterrupted || strings.Count(stderr, "trying again") < 2 {
		t.Fatalf("unreachable etcd: exit %d, stderr:\n%s", code, stderr)
	}

	f := l.Files(pki.RoleEtcd)
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: filepath.Join(t.TempDir(), "etcd"),
		ClientTLS: &embedded.EtcdTLS{CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ep := "https://" + e.Clients[0].Addr().String()
	ctx, cancel = context.WithCancel(context.Background())
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := run(ctx, env, "etcd-setup", "--wait", "--etcd", ep, "--cluster", "c1")
		done <- result{code, stdout, stderr}
	}()
	select {
	case r := <-done:
		t.Fatalf("--wait returned before the signal: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	case <-time.After(3 * time.Second):
	}
	cancel()
	r := <-done
	if r.code != exitOK || !strings.Contains(r.stdout, "etcd auth is on") {
		t.Fatalf("after the signal: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Without --wait, a second run (auth on now) succeeds and returns.
	if code, _, stderr := run(context.Background(), env, "etcd-setup", "--etcd", ep, "--cluster", "c1"); code != exitOK {
		t.Fatalf("second run: exit %d: %s", code, stderr)
	}
}
