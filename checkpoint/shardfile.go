package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// readChunk is the size of each read when hashing a data section.
const readChunk = 4 << 20

// ShardFile is an open shard whose header has been validated. Its data is
// read on demand; VerifyData checks it against the recorded checksum.
type ShardFile struct {
	r      io.ReaderAt
	closer io.Closer
	layout *shardLayout
}

// OpenShard opens the shard file at path and validates its header and size.
// It does not read the tensor data.
func OpenShard(path string) (*ShardFile, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("checkpoint file %s is missing; fall back to an older committed checkpoint (DirStore.NewestValid): %w", path, err)
		}
		return nil, fmt.Errorf("open shard: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat shard: %w", err)
	}
	sf, err := newShardFile(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	sf.closer = f
	return sf, nil
}

// newShardFile validates the shard of the given size behind r; name is used
// in errors.
func newShardFile(r io.ReaderAt, size int64, name string) (*ShardFile, error) {
	if !hostLittleEndian() {
		return nil, errBigEndian
	}
	l, err := parseShard(r, size, name)
	if err != nil {
		return nil, err
	}
	return &ShardFile{r: r, layout: l}, nil
}

// Close closes the file.
func (s *ShardFile) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// Path is the file's path.
func (s *ShardFile) Path() string { return s.layout.path }

// Meta is what the shard says about itself.
func (s *ShardFile) Meta() ShardMeta { return s.layout.meta }

// Size is the file size in bytes.
func (s *ShardFile) Size() int64 { return s.layout.size }

// HeaderSHA256 is the hex sha256 of the header bytes, as read.
func (s *ShardFile) HeaderSHA256() string { return s.layout.headerSHA256 }

// DataSHA256 is the hex sha256 of the data section recorded in the header.
func (s *ShardFile) DataSHA256() string { return s.layout.dataSHA256 }

// VerifyData reads the whole data section and checks it against the
// checksum recorded in the header.
func (s *ShardFile) VerifyData(ctx context.Context) error {
	return s.scanData(ctx, nil)
}

// want is a byte range of the data section to copy out while scanning.
type want struct {
	span
	dst []byte
}

// scanData streams the whole data section through sha256, copies the byte
// ranges in wants out on the way, and checks the checksum. One pass reads
// each byte once, which is the least a checksum allows.
func (s *ShardFile) scanData(ctx context.Context, wants []want) error {
	l := s.layout
	dataLen := l.size - l.dataStart
	h := sha256.New()
	buf := make([]byte, min(int64(readChunk), dataLen))
	for pos := int64(0); pos < dataLen; {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := buf[:min(int64(len(buf)), dataLen-pos)]
		if err := readFullAt(s.r, chunk, l.dataStart+pos); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return corrupt(l.path, fixFallBack, "file ended at %d bytes while reading data that its header says is there (truncated while open?)", l.dataStart+pos)
			}
			return fmt.Errorf("read shard %s: %w", l.path, err)
		}
		h.Write(chunk)
		end := pos + int64(len(chunk))
		for _, w := range wants {
			lo, hi := max(pos, w.begin), min(end, w.end)
			if lo < hi {
				copy(w.dst[lo-w.begin:hi-w.begin], chunk[lo-pos:hi-pos])
			}
		}
		pos = end
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != l.dataSHA256 {
		return corrupt(l.path, fixFallBack, "tensor data sha256 is %s but the header records %s (data corrupted)", got, l.dataSHA256)
	}
	return nil
}

// rangeWant is the part of tensor covering flat indices [lo,hi), to be
// copied into dst (len hi-lo).
func (s *ShardFile) rangeWant(tensor string, lo, hi int, dst []float32) (want, error) {
	m := s.layout.meta
	t, ok := s.layout.tensors[tensor]
	switch {
	case !ok:
		return want{}, fmt.Errorf("shard %s has no tensor %q", s.layout.path, tensor)
	case lo < m.Lo || lo > hi || hi > m.Hi:
		return want{}, fmt.Errorf("range [%d,%d) is not inside shard %s range [%d,%d)", lo, hi, s.layout.path, m.Lo, m.Hi)
	case len(dst) != hi-lo:
		return want{}, fmt.Errorf("destination has %d elements for range [%d,%d)", len(dst), lo, hi)
	}
	begin := t.begin + 4*int64(lo-m.Lo)
	return want{span: span{begin, begin + 4*int64(hi-lo)}, dst: floatBytes(dst)}, nil
}

// ReadRange reads the flat-vector elements [lo,hi) of tensor into dst
// without reading anything else and without verifying the checksum (use
// VerifyData, or DirStore.LoadRange which does both in one pass).
func (s *ShardFile) ReadRange(tensor string, lo, hi int, dst []float32) error {
	w, err := s.rangeWant(tensor, lo, hi, dst)
	if err != nil {
		return err
	}
	return s.readWant(w)
}

func (s *ShardFile) readWant(w want) error {
	if err := readFullAt(s.r, w.dst, s.layout.dataStart+w.begin); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return corrupt(s.layout.path, fixFallBack, "file ended before data offset %d that its header promises (truncated while open?)", w.end)
		}
		return fmt.Errorf("read shard %s: %w", s.layout.path, err)
	}
	return nil
}

// ReadShard reads and verifies a whole shard file.
func ReadShard(ctx context.Context, path string) (ShardMeta, State, error) {
	sf, err := OpenShard(path)
	if err != nil {
		return ShardMeta{}, State{}, err
	}
	defer sf.Close()
	m := sf.Meta()
	st := State{Params: make([]float32, m.Len()), AdamM: make([]float32, m.Len()), AdamV: make([]float32, m.Len())}
	wants, err := sf.stateWants(m.Lo, m.Hi, st)
	if err != nil {
		return ShardMeta{}, State{}, err
	}
	if err := sf.scanData(ctx, wants); err != nil {
		return ShardMeta{}, State{}, err
	}
	return m, st, nil
}

// stateWants maps the non-nil slices of dst to their bytes in this shard,
// for the flat range [lo,hi).
func (s *ShardFile) stateWants(lo, hi int, dst State) ([]want, error) {
	var wants []want
	for i, t := range dst.tensors() {
		if t == nil {
			continue
		}
		w, err := s.rangeWant(tensorNames()[i], lo, hi, t)
		if err != nil {
			return nil, err
		}
		wants = append(wants, w)
	}
	return wants, nil
}
