package pki

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func TestEnsureDir(t *testing.T) {
	for _, tc := range []struct {
		name string
		// change alters the directory (or the options) after the first run.
		change func(t *testing.T, dir string, opts *EnsureOptions)
		// changed lists the files expected to differ after the second run.
		changed func(l *Local) []string
	}{
		{"reused as is", func(*testing.T, string, *EnsureOptions) {}, func(*Local) []string { return nil }},
		{"missing certificate reissued", func(t *testing.T, dir string, _ *EnsureOptions) {
			if err := os.Remove(FilesFor(dir, RoleWorker, "local").Cert); err != nil {
				t.Fatal(err)
			}
		}, func(l *Local) []string { return []string{l.Files(RoleWorker).Cert, l.Files(RoleWorker).Key} }},
		{"new hosts reissue every certificate", func(_ *testing.T, _ string, o *EnsureOptions) {
			o.Hosts = []string{"127.0.0.1", "box.example"}
		}, func(l *Local) []string {
			var out []string
			for _, r := range Roles() {
				out = append(out, l.Files(r).Cert, l.Files(r).Key)
			}
			return out
		}},
		{"expiring CA replaced with everything", func(_ *testing.T, _ string, o *EnsureOptions) {
			o.Now = func() time.Time { return time.Now().Add(DefaultCAValidity - 24*time.Hour) }
		}, func(l *Local) []string {
			out := []string{filepath.Join(l.Dir, CACertFile), filepath.Join(l.Dir, CAKeyFile)}
			for _, r := range Roles() {
				out = append(out, l.Files(r).Cert, l.Files(r).Key)
			}
			return out
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "pki")
			var opts EnsureOptions
			l, err := EnsureDir(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			before := readAll(t, dir)
			tc.change(t, dir, &opts)
			if _, err := EnsureDir(dir, opts); err != nil {
				t.Fatal(err)
			}
			after := readAll(t, dir)
			want := map[string]bool{}
			for _, p := range tc.changed(l) {
				want[filepath.Base(p)] = true
			}
			for name, b := range after {
				if differs := !bytes.Equal(before[name], b); differs != want[name] {
					t.Errorf("%s: changed %v, want %v", name, differs, want[name])
				}
			}
			if len(after) != len(before) {
				t.Errorf("%d files before, %d after", len(before), len(after))
			}
		})
	}
}

func TestEnsureDirRefusesHalfACA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := EnsureDir(dir, EnsureOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	_, err := EnsureDir(dir, EnsureOptions{})
	if err == nil || !strings.Contains(err.Error(), "remove "+dir) {
		t.Fatalf("got %v, want a refusal telling to remove %s", err, dir)
	}
}

func TestWriteClusterBundle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bundle")
	opts := BundleOptions{
		Coordinators: SpecsForHosts([]string{"c0.example", "c1.example", "10.0.0.3"}),
		Etcd:         []CertSpec{{Name: "etcd", Hosts: []string{"etcd.example"}}},
	}
	if err := WriteClusterBundle(dir, opts); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		role Role
		name string
		host string
	}{
		{RoleCoordinator, "c0.example", "c0.example"},
		{RoleCoordinator, "10.0.0.3", "10.0.0.3"},
		{RoleWorker, "worker", ""},
		{RoleUser, "admin", ""},
		{RoleEtcd, "etcd", "etcd.example"},
	} {
		c, err := LoadCredentials(FilesFor(dir, tc.role, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		if c.Identity != (Identity{Role: tc.role, Name: tc.name}) {
			t.Errorf("identity %v", c.Identity)
		}
		if tc.host != "" {
			if err := c.Cert.Leaf.VerifyHostname(tc.host); err != nil {
				t.Error(err)
			}
		}
	}
	if _, err := os.Stat(FilesFor(dir, RoleNATS, "nats").Cert); err == nil {
		t.Error("a NATS certificate was issued without being asked for")
	}

	for _, tc := range []struct {
		name string
		dir  string
		opts BundleOptions
		want string
	}{
		{"existing CA", dir, opts, "already holds a CA"},
		{"no coordinators", filepath.Join(t.TempDir(), "b"), BundleOptions{}, "no coordinator"},
		{"coordinator without hosts", filepath.Join(t.TempDir(), "b"), BundleOptions{Coordinators: []CertSpec{{Name: "c0"}}}, "no hosts"},
		{"duplicate name", filepath.Join(t.TempDir(), "b"), BundleOptions{Coordinators: SpecsForHosts([]string{"a", "a"})}, "two coordinator"},
		{"bad name", filepath.Join(t.TempDir(), "b"), BundleOptions{Coordinators: []CertSpec{{Name: "../x", Hosts: []string{"x"}}}}, "not start with"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteClusterBundle(tc.dir, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if tc.dir != dir {
				if _, err := os.Stat(tc.dir); err == nil {
					t.Errorf("%s was created for a refused bundle", tc.dir)
				}
			}
		})
	}
}
