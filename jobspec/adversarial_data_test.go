package jobspec

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dataRoot makes a data root with one good file, a subdirectory, and the
// hostile entries the table names, and returns its absolute path.
func dataRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "good.txt"), []byte("hello, world\n"), 0o644))
	must(os.Mkdir(filepath.Join(root, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(root, "sub", "inner.txt"), []byte("inner\n"), 0o644))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "passwd")))
	must(os.Symlink("/dev/zero", filepath.Join(root, "zero")))
	must(os.Symlink("../good.txt", filepath.Join(root, "sub", "up")))            // stays inside
	must(os.Symlink("../../../../../../etc/passwd", filepath.Join(root, "rel"))) // relative, leaves
	must(os.Symlink("loop", filepath.Join(root, "loop")))
	must(syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	return root
}

func TestAdversarialDataPathConfined(t *testing.T) {
	root := dataRoot(t)
	passwdSize := ""
	if st, err := os.Stat("/etc/passwd"); err == nil {
		passwdSize = strconv.FormatInt(st.Size(), 10)
	}
	tests := []struct {
		name, rel string
		want      string // substring of the error; "" means the open succeeds
	}{
		{"regular file", "good.txt", ""},
		{"file in a subdirectory", "sub/inner.txt", ""},
		{"symlink that stays inside the root", "sub/up", ""},
		{"empty", "", "data: required"},
		{"absolute", "/etc/passwd", `"/etc/passwd" is absolute`},
		{"absolute inside the root", filepath.Join(root, "good.txt"), "is absolute"},
		{"dotdot", "../x", `"../x" has a ".." component`},
		{"dotdot after a directory", "a/../../x", `"a/../../x" has a ".." component`},
		{"dotdot that would stay inside", "sub/../good.txt", `has a ".." component`},
		{"NUL byte", "good.txt\x00.evil", "contains a NUL byte"},
		{"symlink to /etc/passwd", "passwd", `"passwd" cannot be opened inside the data root`},
		{"relative symlink out of the root", "rel", `"rel" cannot be opened inside the data root`},
		{"symlink to /dev/zero", "zero", `"zero" cannot be opened inside the data root`},
		{"FIFO", "fifo", `"fifo" is a FIFO, not a regular file`},
		{"directory", "sub", `"sub" is a directory, not a regular file`},
		{"the root itself", ".", `"." is a directory`},
		{"missing", "nope.txt", `"nope.txt" does not exist under the data root`},
		{"symlink loop", "loop", `"loop"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A FIFO with no writer blocks a plain open forever; OpenData
			// must return at once whatever the entry is.
			type result struct {
				f   *os.File
				err error
			}
			done := make(chan result, 1)
			go func() {
				f, err := OpenData(root, tc.rel)
				done <- result{f, err}
			}()
			var res result
			select {
			case res = <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("OpenData(%q) did not return within 5 s", tc.rel)
			}
			if tc.want == "" {
				if res.err != nil {
					t.Fatalf("OpenData(%q): %v", tc.rel, res.err)
				}
				res.f.Close()
				return
			}
			if res.err == nil {
				res.f.Close()
				t.Fatalf("OpenData(%q) opened it", tc.rel)
			}
			msg := res.err.Error()
			if !strings.HasPrefix(msg, "data: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q\ndoes not start with %q and contain %q", msg, "data: ", tc.want)
			}
			// The message must not leak where the root is, unless the user
			// wrote it; nor the size of what a symlink points at.
			if !strings.Contains(tc.rel, root) && strings.Contains(msg, root) {
				t.Errorf("error %q leaks the data root %q", msg, root)
			}
			if passwdSize != "" && strings.Contains(msg, passwdSize) {
				t.Errorf("error %q contains /etc/passwd's size %s", msg, passwdSize)
			}
			if strings.Contains(msg, "/etc/passwd") && tc.rel != "/etc/passwd" {
				t.Errorf("error %q names a symlink's target", msg)
			}
		})
	}
}

// TestAdversarialDataRootUnusable checks that a bad root is refused
// without naming it.
func TestAdversarialDataRootUnusable(t *testing.T) {
	root := filepath.Join(t.TempDir(), "no-such-root")
	_, err := OpenData(root, "good.txt")
	if err == nil || strings.Contains(err.Error(), root) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenData under a missing root: %v", err)
	}
}

func TestAdversarialReadFileLimited(t *testing.T) {
	root := dataRoot(t)
	tests := []struct {
		name    string
		max     int64
		wantErr string
	}{
		{"under the limit", 1 << 10, ""},
		{"exactly the limit", int64(len("hello, world\n")), ""},
		{"over the limit", 4, "over the 4-byte limit"},
		{"negative limit", -1, "negative limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := OpenData(root, "good.txt")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b, err := ReadFileLimited(f, tc.max)
			if tc.wantErr == "" {
				if err != nil || string(b) != "hello, world\n" {
					t.Fatalf("ReadFileLimited = %q, %v", b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ReadFileLimited: %v, want %q", err, tc.wantErr)
			}
			// Neither the file's size (13) nor its location.
			if strings.Contains(err.Error(), "13") || strings.Contains(err.Error(), root) {
				t.Errorf("error %q leaks the file's size or path", err)
			}
		})
	}
}
