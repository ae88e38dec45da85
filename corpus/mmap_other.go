//go:build !unix

package corpus

import (
	"fmt"
	"io"
	"os"
)

// mapFile reads the file into memory where mmap is unavailable; the corpus
// then has to fit in memory.
func mapFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("stat token file: %w", err)
	}
	if st.Size() > maxFileBytes {
		return nil, fmt.Errorf("token file %s: %d bytes is over the %d-byte limit (split it into shards)", path, st.Size(), int64(maxFileBytes))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read token file: %w", err)
	}
	return b, nil
}

func unmapFile([]byte) error { return nil }

func releaseFile([]byte) error { return nil }

// mapOpened reads an open file whole; path names it in errors.
func mapOpened(f *os.File, path string) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("token file %s is not a regular file", path)
	}
	if st.Size() > maxFileBytes {
		return nil, fmt.Errorf("token file %s: %d bytes is over the %d-byte limit (split it into shards)", path, st.Size(), int64(maxFileBytes))
	}
	return io.ReadAll(f)
}
