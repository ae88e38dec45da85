//go:build unix

package corpus

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps a whole file read-only. The mapping outlives the file
// descriptor. Pages are read on first touch and, being clean file pages,
// the kernel can drop them under memory pressure, which is what lets a
// corpus be larger than memory.
func mapFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open token file: %w", err)
	}
	defer f.Close()
	return mapOpened(f, path)
}

// mapOpened maps an open file whole, read-only; path names it in errors.
// The caller still closes f.
func mapOpened(f *os.File, path string) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("token file %s is not a regular file", path)
	}
	size := st.Size()
	if size > maxFileBytes {
		return nil, fmt.Errorf("token file %s: %d bytes is over the %d-byte limit (split it into shards)", path, size, int64(maxFileBytes))
	}
	if size == 0 {
		return []byte{}, nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap token file %s: %w", path, err)
	}
	// Batches read short windows at random offsets: read-ahead would pull
	// in pages no batch asks for.
	_ = unix.Madvise(data, unix.MADV_RANDOM)
	return data, nil
}

func unmapFile(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	return unix.Munmap(data)
}

// releaseFile drops the mapping's page-table entries. The pages stay in
// the page cache (a later read refaults them without I/O if they are
// still cached), but they no longer count in the process's RSS.
func releaseFile(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	return unix.Madvise(data, unix.MADV_DONTNEED)
}
