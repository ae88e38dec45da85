package checkpoint

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
)

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
