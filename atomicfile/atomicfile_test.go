package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	cases := []struct {
		name     string
		perm     os.FileMode
		write    func(io.Writer) error
		wantErr  bool
		wantData string // what the file holds afterwards
	}{
		{"creates", 0o600, func(w io.Writer) error { _, err := io.WriteString(w, "one"); return err }, false, "one"},
		{"replaces", 0o644, func(w io.Writer) error { _, err := io.WriteString(w, "two"); return err }, false, "two"},
		{"a failed write keeps the old file", 0o644, func(w io.Writer) error {
			io.WriteString(w, "torn")
			return errors.New("disk full")
		}, true, "two"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(path, tc.perm, tc.write)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Write: %v, want error %v", err, tc.wantErr)
			}
			b, rerr := os.ReadFile(path)
			if rerr != nil || string(b) != tc.wantData {
				t.Fatalf("file holds %q, %v; want %q", b, rerr, tc.wantData)
			}
			if st, _ := os.Stat(path); !tc.wantErr && st.Mode().Perm() != tc.perm {
				t.Fatalf("mode %v, want %v", st.Mode().Perm(), tc.perm)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Fatalf("%d entries left in the directory, want only the file", len(entries))
			}
		})
	}
}
