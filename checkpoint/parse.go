package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"
)

// span is a byte range [begin,end) of the data section.
type span struct{ begin, end int64 }

// shardLayout is what a validated shard header says about its file.
type shardLayout struct {
	path         string
	meta         ShardMeta
	dataSHA256   string // as recorded in the metadata
	headerSHA256 string // computed over the 8-byte length and the JSON header
	dataStart    int64  // file offset of the data section
	size         int64  // file size, equal to dataStart + data length
	tensors      map[string]span
}

// parseShard reads and validates the header of the shard file of the given
// size behind r. It trusts nothing in the file: every length and offset is
// checked against the file size and against each other before use, so
// damaged or hostile input gives an error, never a panic or a huge
// allocation. The data section is not read; see verifyData.
func parseShard(r io.ReaderAt, size int64, path string) (*shardLayout, error) {
	if size < 8 {
		return nil, corrupt(path, fixFallBack, "file is %d bytes, too short for the 8-byte safetensors header length (truncated or empty)", size)
	}
	var lenField [8]byte
	if err := readFullAt(r, lenField[:], 0); err != nil {
		return nil, fmt.Errorf("read shard %s: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(lenField[:])
	switch {
	case n > MaxHeaderBytes:
		return nil, corrupt(path, fixNotShard, "header length field says %d bytes, over the %d-byte limit", n, MaxHeaderBytes)
	case n > uint64(size-8):
		return nil, corrupt(path, fixFallBack, "header length field says %d bytes but only %d bytes follow it (truncated)", n, size-8)
	case n < 2:
		return nil, corrupt(path, fixNotShard, "header length %d is too small for a JSON object", n)
	}
	header := make([]byte, 8+n)
	copy(header, lenField[:])
	if err := readFullAt(r, header[8:], 8); err != nil {
		return nil, fmt.Errorf("read shard %s: %w", path, err)
	}
	l, err := parseHeaderJSON(path, header[8:], size)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(header)
	l.headerSHA256 = hex.EncodeToString(sum[:])
	return l, nil
}

// parseHeaderJSON validates the JSON header h of a file of the given size.
func parseHeaderJSON(path string, h []byte, size int64) (*shardLayout, error) {
	bad := func(format string, args ...any) error { return corrupt(path, fixNotShard, format, args...) }
	if !utf8.Valid(h) {
		return nil, bad("header is not valid UTF-8")
	}
	if h[0] != '{' {
		return nil, bad("header does not start with '{'")
	}
	keys, members, end, err := decodeObject(h)
	if err != nil {
		return nil, bad("header is not well-formed JSON: %v", err)
	}
	for _, c := range h[end:] {
		if c != ' ' {
			return nil, bad("header has byte %q after the JSON object; only space padding is allowed", c)
		}
	}
	rawMeta, ok := members["__metadata__"]
	if !ok {
		return nil, bad("header has no __metadata__")
	}
	_, mdMembers, _, err := decodeObject(rawMeta)
	if err != nil {
		return nil, bad("__metadata__ is not a JSON object: %v", err)
	}
	md := make(map[string]string, len(mdMembers))
	for k, raw := range mdMembers {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, bad("__metadata__ %q is not a string", k)
		}
		md[k] = s
	}
	meta, dataSHA, err := parseMetadata(path, md)
	if err != nil {
		return nil, err
	}

	dataStart := 8 + int64(len(h))
	l := &shardLayout{path: path, meta: meta, dataSHA256: dataSHA, dataStart: dataStart, size: size, tensors: map[string]span{}}
	n := uint64(meta.Len())
	for _, name := range keys {
		if name == "__metadata__" {
			continue
		}
		if !isTensorName(name) {
			return nil, bad("header has unexpected tensor %q; a shard holds exactly %v", name, tensorNames())
		}
		th, err := decodeTensorHeader(members[name])
		if err != nil {
			return nil, bad("tensor %q entry is malformed: %v", name, err)
		}
		switch {
		case th.DType != dtypeF32:
			return nil, bad("tensor %q has dtype %q, want %s", name, th.DType, dtypeF32)
		case len(th.Shape) != 1:
			return nil, bad("tensor %q has shape %v, want one dimension", name, th.Shape)
		case th.Shape[0] != n:
			return nil, bad("tensor %q has shape [%d] but the metadata range [%d,%d) holds %d elements", name, th.Shape[0], meta.Lo, meta.Hi, n)
		case len(th.DataOffsets) != 2:
			return nil, bad("tensor %q data_offsets %v must be [begin, end]", name, th.DataOffsets)
		}
		begin, end := th.DataOffsets[0], th.DataOffsets[1]
		// n <= maxElems, so 4*n cannot overflow; end-begin is only computed once begin <= end.
		if begin > end || end-begin != 4*n {
			return nil, bad("tensor %q data_offsets [%d,%d] do not span the %d bytes of shape [%d] F32", name, begin, end, 4*n, n)
		}
		if end > uint64(size) {
			return nil, corrupt(path, fixFallBack, "tensor %q ends at data offset %d, past the end of the %d-byte file (truncated)", name, end, size)
		}
		l.tensors[name] = span{int64(begin), int64(end)}
	}
	for _, name := range tensorNames() {
		if _, ok := l.tensors[name]; !ok {
			return nil, bad("header lacks tensor %q", name)
		}
	}
	dataLen, err := checkContiguous(path, l.tensors)
	if err != nil {
		return nil, err
	}
	switch want := dataStart + dataLen; {
	case size < want:
		return nil, corrupt(path, fixFallBack, "file is %d bytes but its header describes %d (truncated by %d bytes)", size, want, want-size)
	case size > want:
		return nil, corrupt(path, fixFallBack, "file has %d unexpected bytes after the tensor data", size-want)
	}
	return l, nil
}

// checkContiguous enforces the safetensors rule that tensors tile the data
// section from offset 0 with no holes and no overlaps, and returns its length.
func checkContiguous(path string, tensors map[string]span) (int64, error) {
	type named struct {
		name string
		span
	}
	sorted := make([]named, 0, len(tensors))
	for name, s := range tensors {
		sorted = append(sorted, named{name, s})
	}
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].begin != sorted[j].begin {
			return sorted[i].begin < sorted[j].begin
		}
		return sorted[i].end < sorted[j].end
	})
	var pos int64
	prev := "the start of the data section"
	for _, t := range sorted {
		switch {
		case t.begin < pos:
			return 0, corrupt(path, fixNotShard, "tensor %q overlaps %s", t.name, prev)
		case t.begin > pos:
			return 0, corrupt(path, fixNotShard, "%d-byte hole between %s and tensor %q (safetensors forbids holes)", t.begin-pos, prev, t.name)
		}
		pos = t.end
		prev = fmt.Sprintf("tensor %q", t.name)
	}
	return pos, nil
}

func isTensorName(name string) bool {
	for _, t := range tensorNames() {
		if name == t {
			return true
		}
	}
	return false
}

func decodeTensorHeader(raw json.RawMessage) (tensorHeader, error) {
	var th tensorHeader
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(&th)
	return th, err
}

// decodeObject decodes the JSON object at the start of data into its members,
// keeping key order, and returns the offset just past the closing brace.
// Duplicate keys are rejected: encoding/json would silently keep the last
// one, and two readers of one file must never see different tensors.
func decodeObject(data []byte) (keys []string, members map[string]json.RawMessage, end int64, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil {
		return nil, nil, 0, err
	} else if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, 0, fmt.Errorf("want a JSON object, found %v", tok)
	}
	members = map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, 0, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, 0, fmt.Errorf("want an object key, found %v", tok)
		}
		if _, dup := members[key]; dup {
			return nil, nil, 0, fmt.Errorf("duplicate key %q", key)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, 0, err
		}
		keys = append(keys, key)
		members[key] = raw
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, nil, 0, err
	}
	return keys, members, dec.InputOffset(), nil
}

// readFullAt fills p from r at off. io.ReaderAt may report io.EOF together
// with a full read at the end of the file; that is success. A short read is
// io.ErrUnexpectedEOF: the file shrank after it was sized.
func readFullAt(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
