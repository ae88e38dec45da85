package isoflop

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeFileAtomic replaces path with the bytes write produces, so that a
// reader (or a sweep killed mid-write) only ever sees the old file or the
// complete new one: write a temp file in the same directory, fsync it,
// rename it over path, then fsync the directory so the rename survives a
// crash.
func writeFileAtomic(path string, write func(f *os.File) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; results are meant to be read by others.
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Best effort: some filesystems refuse to fsync a directory.
		_ = d.Sync()
		d.Close()
	}
	return nil
}
