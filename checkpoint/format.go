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
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// The shard file format, top to bottom: what a shard holds (State, the
// tensor names, ShardMeta and its __metadata__ keys), how its safetensors
// header is encoded (encodeHeader), how a header read back is checked
// (parseShard), and the little-endian float32 encoding of the data.
// Writing a file is write.go's, reading one shardfile.go's.

// Format identification stored in every shard's __metadata__.
const (
	FormatName    = "modcoord.checkpoint"
	FormatVersion = "1"
)

// Tensor names inside a shard file, in data order.
const (
	TensorParams = "params"
	TensorAdamM  = "adam_m"
	TensorAdamV  = "adam_v"
)

// tensorNames lists the tensors in the order their data is stored.
func tensorNames() [3]string { return [3]string{TensorParams, TensorAdamM, TensorAdamV} }

// State is one worker's part of the training state: its range of the
// parameters and of AdamW's first and second moments. All three have the
// range's length.
type State struct {
	Params []float32
	AdamM  []float32
	AdamV  []float32
}

// tensors returns the slices in data order (see tensorNames).
func (s State) tensors() [3][]float32 { return [3][]float32{s.Params, s.AdamM, s.AdamV} }

// checkLen reports a slice whose length is not n.
func (s State) checkLen(n int) error {
	for i, t := range s.tensors() {
		if len(t) != n {
			return fmt.Errorf("%s has %d elements, the range needs %d", tensorNames()[i], len(t), n)
		}
	}
	return nil
}

// maxElems bounds M so that byte sizes (12 bytes per element per shard)
// never overflow int64.
const maxElems = 1 << 58

// Keys of a shard's __metadata__ (all values are strings, as safetensors
// requires).
const (
	metaFormat     = "format"
	metaVersion    = "format_version"
	metaJob        = "job"
	metaStep       = "step"
	metaGeneration = "generation"
	metaRank       = "rank"
	metaWorld      = "world"
	metaLo         = "lo"
	metaHi         = "hi"
	metaTotal      = "total"
	metaDataSHA    = "data_sha256"
	metaConfig     = "config"
)

// ShardMeta says what a shard is: which checkpoint, which worker, which
// range of the flat vector.
type ShardMeta struct {
	Job        string
	Step       int64
	Generation uint64
	Rank       int
	World      int
	Lo, Hi     int // the range [Lo,Hi) of the flat vector this shard holds
	Total      int // M, the length of the flat vector
	// Config is opaque JSON from the caller (model config, tensor layout),
	// stored compacted. Empty means none.
	Config json.RawMessage
}

// Len is the number of elements of each tensor in the shard.
func (m ShardMeta) Len() int { return m.Hi - m.Lo }

// Validate checks that m describes a possible shard.
func (m ShardMeta) Validate() error {
	if err := checkJobName(m.Job); err != nil {
		return err
	}
	switch {
	case m.Step < 0:
		return fmt.Errorf("step %d is negative", m.Step)
	case m.World < 1:
		return fmt.Errorf("world size %d must be at least 1", m.World)
	case m.Rank < 0 || m.Rank >= m.World:
		return fmt.Errorf("rank %d is outside [0,%d)", m.Rank, m.World)
	case m.Total < 1 || int64(m.Total) > maxElems:
		return fmt.Errorf("total %d must be in [1,%d]", m.Total, maxElems)
	case m.Lo < 0 || m.Lo > m.Hi || m.Hi > m.Total:
		return fmt.Errorf("range [%d,%d) is not inside [0,%d)", m.Lo, m.Hi, m.Total)
	case len(m.Config) > 0 && !json.Valid(m.Config):
		return fmt.Errorf("config is not valid JSON")
	}
	return nil
}

// metadata renders m as safetensors __metadata__.
func (m ShardMeta) metadata(dataSHA256 string) (map[string]string, error) {
	md := map[string]string{
		metaFormat:     FormatName,
		metaVersion:    FormatVersion,
		metaJob:        m.Job,
		metaStep:       strconv.FormatInt(m.Step, 10),
		metaGeneration: strconv.FormatUint(m.Generation, 10),
		metaRank:       strconv.Itoa(m.Rank),
		metaWorld:      strconv.Itoa(m.World),
		metaLo:         strconv.Itoa(m.Lo),
		metaHi:         strconv.Itoa(m.Hi),
		metaTotal:      strconv.Itoa(m.Total),
		metaDataSHA:    dataSHA256,
	}
	if len(m.Config) > 0 {
		c, err := compactJSON(m.Config)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		md[metaConfig] = string(c)
	}
	return md, nil
}

// parseMetadata is the inverse of metadata; errors name path.
func parseMetadata(path string, md map[string]string) (meta ShardMeta, dataSHA256 string, err error) {
	bad := func(format string, args ...any) error { return corrupt(path, fixNotShard, format, args...) }
	get := func(key string) (string, error) {
		v, ok := md[key]
		if !ok {
			return "", bad("__metadata__ lacks %q", key)
		}
		return v, nil
	}
	num := func(key string) (int64, error) {
		s, err := get(key)
		if err != nil {
			return 0, err
		}
		v, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil || strconv.FormatInt(v, 10) != s {
			return 0, bad("__metadata__ %q is %q, not a decimal integer", key, s)
		}
		return v, nil
	}
	format, err := get(metaFormat)
	if err != nil {
		return meta, "", err
	}
	if format != FormatName {
		return meta, "", bad("__metadata__ format is %q, want %q", format, FormatName)
	}
	version, err := get(metaVersion)
	if err != nil {
		return meta, "", err
	}
	if version != FormatVersion {
		return meta, "", corrupt(path, fixUpgrade, "format version is %q, this reader understands %q", version, FormatVersion)
	}
	if meta.Job, err = get(metaJob); err != nil {
		return meta, "", err
	}
	var nums [7]int64
	for i, key := range [...]string{metaStep, metaGeneration, metaRank, metaWorld, metaLo, metaHi, metaTotal} {
		if nums[i], err = num(key); err != nil {
			return meta, "", err
		}
	}
	if nums[1] < 0 {
		return meta, "", bad("__metadata__ generation %d is negative", nums[1])
	}
	meta.Step, meta.Generation = nums[0], uint64(nums[1])
	meta.Rank, meta.World, meta.Lo, meta.Hi, meta.Total = int(nums[2]), int(nums[3]), int(nums[4]), int(nums[5]), int(nums[6])
	if c, ok := md[metaConfig]; ok {
		meta.Config = json.RawMessage(c)
	}
	if verr := meta.Validate(); verr != nil {
		return meta, "", bad("__metadata__ is inconsistent: %v", verr)
	}
	if dataSHA256, err = get(metaDataSHA); err != nil {
		return meta, "", err
	}
	if !isSHA256Hex(dataSHA256) {
		return meta, "", bad("__metadata__ data_sha256 %q is not 64 lowercase hex digits", dataSHA256)
	}
	return meta, dataSHA256, nil
}

// mismatch describes how got differs from want, or returns "" if they
// describe the same shard.
func (got ShardMeta) mismatch(want ShardMeta) string {
	var diffs []string
	add := func(field string, g, w any) {
		diffs = append(diffs, fmt.Sprintf("%s=%v (manifest says %v)", field, g, w))
	}
	if got.Job != want.Job {
		add("job", got.Job, want.Job)
	}
	if got.Step != want.Step {
		add("step", got.Step, want.Step)
	}
	if got.Generation != want.Generation {
		add("generation", got.Generation, want.Generation)
	}
	if got.Rank != want.Rank {
		add("rank", got.Rank, want.Rank)
	}
	if got.World != want.World {
		add("world", got.World, want.World)
	}
	if got.Lo != want.Lo || got.Hi != want.Hi {
		add("range", fmt.Sprintf("[%d,%d)", got.Lo, got.Hi), fmt.Sprintf("[%d,%d)", want.Lo, want.Hi))
	}
	if got.Total != want.Total {
		add("total", got.Total, want.Total)
	}
	if !sameJSON(got.Config, want.Config) {
		diffs = append(diffs, "config differs from the manifest's")
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint("metadata does not match the manifest: ", diffs)
}

func compactJSON(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// sameJSON compares two JSON documents ignoring insignificant whitespace;
// manifests are stored indented, shard metadata compacted.
func sameJSON(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	ca, errA := compactJSON(a)
	cb, errB := compactJSON(b)
	return errA == nil && errB == nil && bytes.Equal(ca, cb)
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// MaxHeaderBytes bounds the JSON header a reader accepts, as the reference
// safetensors implementation does (100 MB). Writers fail above it too, so
// every file written can be read back.
const MaxHeaderBytes = 100 << 20

// headerAlign is the alignment safetensors writers pad the header to, so
// that the data section starts 8-byte aligned.
const headerAlign = 8

// dtypeF32 is the safetensors name of little-endian IEEE float32.
const dtypeF32 = "F32"

// tensorHeader is one tensor entry of a safetensors header. Offsets are
// relative to the start of the data section.
type tensorHeader struct {
	DType       string   `json:"dtype"`
	Shape       []uint64 `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// encodeHeader returns the first bytes of a shard file: the 8-byte
// little-endian header length, then the JSON header padded with spaces to
// a multiple of 8 bytes. The encoding is deterministic (map keys sorted), so
// the same meta and checksum always give the same bytes.
func encodeHeader(meta ShardMeta, dataSHA256 string) ([]byte, error) {
	md, err := meta.metadata(dataSHA256)
	if err != nil {
		return nil, err
	}
	n := uint64(meta.Len())
	obj := map[string]any{"__metadata__": md}
	for i, name := range tensorNames() {
		begin := uint64(i) * 4 * n
		obj[name] = tensorHeader{DType: dtypeF32, Shape: []uint64{n}, DataOffsets: []uint64{begin, begin + 4*n}}
	}
	var buf bytes.Buffer
	buf.Write(make([]byte, 8)) // length, filled in below
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep the config readable; escaping is optional in JSON
	if err := enc.Encode(obj); err != nil {
		return nil, fmt.Errorf("encode safetensors header: %w", err)
	}
	buf.Truncate(buf.Len() - 1) // Encode ends with '\n'
	for buf.Len()%headerAlign != 0 {
		buf.WriteByte(' ')
	}
	b := buf.Bytes()
	headerLen := len(b) - 8
	if headerLen > MaxHeaderBytes {
		return nil, fmt.Errorf("safetensors header is %d bytes, over the %d-byte limit readers accept: shrink the config", headerLen, MaxHeaderBytes)
	}
	binary.LittleEndian.PutUint64(b[:8], uint64(headerLen))
	return b, nil
}

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

// errBigEndian is returned on big-endian hosts. The file format is
// little-endian and the fast paths reinterpret float32 slices as bytes; no
// training host modcoord targets is big-endian, so rather than a slow
// conversion path that nothing would test, such hosts get a clear error.
var errBigEndian = errors.New("checkpoint: big-endian hosts are not supported (the format is little-endian float32)")

func hostLittleEndian() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// floatBytes views f as its in-memory bytes without copying. On a
// little-endian host that is exactly the safetensors F32 encoding, which is
// what lets shards be written and read with no conversion pass.
func floatBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}
