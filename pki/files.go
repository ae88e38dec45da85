package pki

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/modcoord/modcoord/atomicfile"
)

// MaxPEMFileSize bounds every certificate or key file read: a PEM
// certificate is about 1 KiB, so anything near this is not ours (a log
// file or a device mounted by mistake) and must not be read into memory.
const MaxPEMFileSize = 64 << 10

// readPEMFile reads a certificate or key file, refusing non-regular files
// (FIFOs and devices would block or never end) and oversized ones. Symbolic
// links are followed: Kubernetes mounts secrets through them.
func readPEMFile(path string) ([]byte, error) {
	// Stat before opening: opening a FIFO blocks until a writer appears.
	if err := checkPEMFileInfo(path, os.Stat); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	// Again on the opened file, which is what is read if the path was
	// swapped in between.
	if err := checkPEMFileInfo(path, func(string) (fs.FileInfo, error) { return f.Stat() }); err != nil {
		return nil, err
	}
	// The file may grow between Stat and ReadAll: read at most one byte
	// past the limit to notice.
	b, err := io.ReadAll(io.LimitReader(f, MaxPEMFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxPEMFileSize {
		return nil, fmt.Errorf("%s grew past %d bytes while being read", path, MaxPEMFileSize)
	}
	return b, nil
}

func checkPEMFileInfo(path string, stat func(string) (fs.FileInfo, error)) error {
	st, err := stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s does not exist: create it with `modcoord certs` (or point the flag at the right directory): %w", path, err)
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%s); give the path of a PEM file", path, st.Mode().Type())
	}
	if st.Size() > MaxPEMFileSize {
		return fmt.Errorf("%s is %d bytes, more than the %d a PEM certificate or key can be; is it the right file?", path, st.Size(), MaxPEMFileSize)
	}
	return nil
}

// writeFileAtomic replaces path with data; perm is set before any byte
// is written, so a key is never readable by others even briefly.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return atomicfile.WriteBytes(path, data, perm)
}

// exists reports whether path exists (any error other than "not there"
// counts as existing, so that the caller's next read reports it).
func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
