package pki

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFilePermissions(t *testing.T) {
	l := mustLocal(t)
	want := map[string]fs.FileMode{CACertFile: 0o644, CAKeyFile: 0o600}
	for _, r := range Roles() {
		f := l.Files(r)
		want[filepath.Base(f.Cert)], want[filepath.Base(f.Key)] = 0o644, 0o600
	}
	entries, err := os.ReadDir(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Errorf("%d files, want %d (temporary files left behind?)", len(entries), len(want))
	}
	for name, mode := range want {
		st, err := os.Stat(filepath.Join(l.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), mode)
		}
	}
	if st, err := os.Stat(l.Dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, %v", st.Mode().Perm(), err)
	}
}

func TestReadPEMFileRefuses(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.crt")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), MaxPEMFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.crt")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "none.crt"), "modcoord certs"},
		{"oversized", big, "more than"},
		{"directory", dir, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readPEMFile(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s with %q", err, tc.path, tc.want)
			}
		})
	}
	// A FIFO without a writer would block a plain open forever.
	t.Run("fifo", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { _, err := readPEMFile(fifo); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("got %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("reading a FIFO blocked")
		}
	})
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.key")
	for _, content := range []string{"first", "second"} {
		if err := writeFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("%d entries, want 1 (temporary file left?)", len(entries))
	}
}
