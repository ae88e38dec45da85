package jobspec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// DataError is a failure to use a spec's data file. Its message names the
// path as the spec wrote it and a reason, and nothing else: not the data
// root's absolute path nor anything about the file (its size, its target),
// since the message reaches whoever submitted the job. Err keeps the cause
// for errors.Is and for the worker's own log.
type DataError struct {
	Path   string // as written in the spec
	Reason string
	Err    error
}

func (e *DataError) Error() string {
	return fmt.Sprintf("data: %q %s", truncate(e.Path, 200), e.Reason)
}

func (e *DataError) Unwrap() error { return e.Err }

// OpenData opens the spec's data path rel under the data root root, for
// reading. It refuses, with a *DataError:
//
//   - a path that is not relative and free of ".." (CheckDataPath);
//   - anything that leads outside root, including through a symlink
//     (os.Root resolves every component inside the root, race-free);
//   - anything that is not a regular file: a directory, a FIFO, a socket,
//     a device such as /dev/zero. The type is checked with fstat on the
//     opened handle, so the file cannot be swapped between check and use,
//     and the open is non-blocking, so a FIFO with no writer cannot hang it.
//
// The caller closes the file.
func OpenData(root, rel string) (*os.File, error) {
	if err := CheckDataPath(rel); err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, &DataError{Path: rel, Reason: "cannot be opened: this worker's data root is not usable (see its log)", Err: err}
	}
	defer r.Close()
	f, err := r.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, &DataError{Path: rel, Reason: openReason(err), Err: err}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &DataError{Path: rel, Reason: "cannot be read", Err: err}
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &DataError{Path: rel, Reason: fmt.Sprintf("is %s, not a regular file; give a text file under the data root", describeType(st.Mode())), Err: fs.ErrInvalid}
	}
	return f, nil
}

// openReason turns an open error into a reason that names no path.
func openReason(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "does not exist under the data root; check the path and that the file is on every worker"
	case errors.Is(err, fs.ErrPermission):
		return "is not readable by the worker (permission denied)"
	case errors.Is(err, syscall.ELOOP):
		return "is a symlink loop"
	default:
		// os.Root's escape error is not exported; everything else left is
		// a path that leaves the root (a symlink out of it) or an I/O error.
		return "cannot be opened inside the data root; it may be a symlink leading outside the root"
	}
}

func describeType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "a special file"
	}
}

// ReadFileLimited reads all of f, refusing a file of more than max bytes
// without reading past max+1 bytes, so a file that grows while being read
// cannot make it allocate more.
func ReadFileLimited(f *os.File, max int64) ([]byte, error) {
	if max < 0 {
		return nil, fmt.Errorf("read data: negative limit %d", max)
	}
	size := int64(0)
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		size = st.Size()
	}
	if size > max {
		return nil, fmt.Errorf("read data: the file is over the %d-byte limit; split it", max)
	}
	// Sized from fstat, one allocation serves the usual file; the limit
	// holds even if the file grows meanwhile.
	var buf bytes.Buffer
	buf.Grow(int(size) + 1)
	if _, err := buf.ReadFrom(io.LimitReader(f, max+1)); err != nil {
		// The file's name may include the data root, so only the cause's
		// kind is printed; the cause itself stays reachable by errors.Is.
		return nil, &quietError{msg: "read data: I/O error while reading the file", err: err}
	}
	b := buf.Bytes()
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read data: the file is over the %d-byte limit; split it", max)
	}
	return b, nil
}

// CheckData opens the spec's data under root and closes it: the same
// checks a worker's OpenCorpus makes, for a caller that shares the workers'
// view of the data (a submitting machine, `modcoord local`). It is only a
// guard against typos; the coordinator itself never reads data.
//
// For a corpus of token shards it maps them and checks the tokenizer and
// its tokenizer, but neither scans the shards for their largest token (a
// worker does, once) nor checks their length: a submission costs no pass
// over the data.
func (s Spec) CheckData(root string) error {
	c, err := s.openCorpus(root)
	if err != nil {
		return err
	}
	defer c.Close()
	return s.checkCorpus(c, false)
}

// quietError prints msg only and unwraps to err, for causes whose text
// names paths that must not reach the job's submitter.
type quietError struct {
	msg string
	err error
}

func (e *quietError) Error() string { return e.msg }
func (e *quietError) Unwrap() error { return e.err }
