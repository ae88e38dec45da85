package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSubjectIsRole(t *testing.T) {
	l := mustLocal(t)
	for _, role := range Roles() {
		leaf := mustCreds(t, l, role).Cert.Leaf
		if leaf.Subject.CommonName != EtcdUser(role) {
			t.Errorf("%s: CN %q, etcd user %q", role, leaf.Subject.CommonName, EtcdUser(role))
		}
		// What nats-server's verify_and_map compares a user name with.
		if got := leaf.Subject.ToRDNSequence().String(); got != NATSUser(role) {
			t.Errorf("%s: subject %q, NATS user %q", role, got, NATSUser(role))
		}
	}
}

func TestLoadDir(t *testing.T) {
	l := mustLocal(t)
	c, err := LoadDir(l.Dir, RoleWorker)
	if err != nil || c.Identity.Role != RoleWorker {
		t.Fatalf("LoadDir = %v, %v", c, err)
	}
	ca, err := LoadCA(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Issue(RoleWorker, "second", nil, IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(l.Dir, RoleWorker); err == nil || !strings.Contains(err.Error(), "2 worker certificates") {
		t.Fatalf("two worker certificates: %v", err)
	}
	empty := t.TempDir()
	if _, err := LoadDir(empty, RoleCoordinator); err == nil || !strings.Contains(err.Error(), "no coordinator certificate") {
		t.Fatalf("empty dir: %v", err)
	}
	// A certificate of another role under a misleading file name.
	dir := t.TempDir()
	f := l.Files(RoleUser)
	for src, dst := range map[string]string{f.CA: "ca.crt", f.Cert: "coordinator-x.crt", f.Key: "coordinator-x.key"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := LoadDir(dir, RoleCoordinator); err == nil || !strings.Contains(err.Error(), "role user") {
		t.Fatalf("renamed user certificate: %v", err)
	}
}
