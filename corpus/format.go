package corpus

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// llm.c shard layout: a header of HeaderInts little-endian int32, then
// Count little-endian uint16 tokens. Header[0] is Magic, [1] Version, [2]
// Count; the rest are zero.
const (
	Magic       = 20240520
	Version     = 1
	HeaderInts  = 256
	HeaderBytes = HeaderInts * 4
)

// MaxShardTokens is the most tokens one llm.c shard can declare: its count
// is an int32. A nanoGPT file may hold more (it has no count to overflow).
const MaxShardTokens = 1<<31 - 1

// maxFileBytes bounds a shard file before it is mapped: 1 TiB is far above
// any real shard and far below what would overflow an int offset.
const maxFileBytes = 1 << 40

// Format says how a token file is laid out.
type Format int

const (
	// Auto reads a file whose first four bytes are the llm.c magic as an
	// llm.c shard and any other file as nanoGPT's headerless layout. An
	// llm.c shard whose magic is damaged is therefore taken for a nanoGPT
	// file; name the format (LLMC) to have it refused instead.
	Auto Format = iota
	// LLMC is llm.c's layout: header, then tokens. Everything in the
	// header is checked against the file.
	LLMC
	// NanoGPT is nanoGPT's layout: little-endian uint16 tokens, no header.
	NanoGPT
)

func (f Format) String() string {
	switch f {
	case Auto:
		return "auto"
	case LLMC:
		return "llmc"
	case NanoGPT:
		return "nanogpt"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// ParseFormat accepts the names String returns.
func ParseFormat(s string) (Format, error) {
	for _, f := range []Format{Auto, LLMC, NanoGPT} {
		if strings.EqualFold(s, f.String()) {
			return f, nil
		}
	}
	return Auto, fmt.Errorf("unknown shard format %q: valid formats are auto, llmc, nanogpt", s)
}

// tokenRange validates a mapped file against its format and returns where
// its tokens lie: bytes [off, off+2n).
func tokenRange(path string, data []byte, f Format) (off, n int, err error) {
	size := len(data)
	if f == Auto {
		f = NanoGPT
		if size >= 4 && binary.LittleEndian.Uint32(data) == Magic {
			f = LLMC
		}
	}
	switch f {
	case NanoGPT:
		if size%2 != 0 {
			return 0, 0, fmt.Errorf("nanoGPT token file %s: %d bytes is odd, so the last uint16 token is cut short (the file is truncated; regenerate it)", path, size)
		}
		if size == 0 {
			return 0, 0, fmt.Errorf("nanoGPT token file %s is empty (regenerate it or leave it out)", path)
		}
		return 0, size / 2, nil
	case LLMC:
		return llmcRange(path, data)
	}
	return 0, 0, fmt.Errorf("token file %s: unknown format %v", path, f)
}

func llmcRange(path string, data []byte) (off, n int, err error) {
	size := len(data)
	if size < HeaderBytes {
		return 0, 0, fmt.Errorf("llm.c shard %s: %d bytes is shorter than the %d-byte header (the file is truncated; regenerate it)", path, size, HeaderBytes)
	}
	h := func(i int) int32 { return int32(binary.LittleEndian.Uint32(data[4*i:])) }
	if m := h(0); m != Magic {
		return 0, 0, fmt.Errorf("llm.c shard %s: magic %d, want %d (not an llm.c shard: pass format nanogpt for a headerless file, or regenerate it)", path, m, Magic)
	}
	if v := h(1); v != Version {
		return 0, 0, fmt.Errorf("llm.c shard %s: version %d, only version %d (uint16 tokens) is supported (regenerate it with version %d)", path, v, Version, Version)
	}
	count := h(2)
	if count < 0 {
		return 0, 0, fmt.Errorf("llm.c shard %s: header declares %d tokens (a negative count: the header is corrupt; regenerate it)", path, count)
	}
	have := (size - HeaderBytes) / 2
	if int(count) > have {
		return 0, 0, fmt.Errorf("llm.c shard %s: header declares %d tokens but the file holds %d (the file is truncated or the header is wrong; regenerate it)", path, count, have)
	}
	if want := HeaderBytes + 2*int(count); size != want {
		return 0, 0, fmt.Errorf("llm.c shard %s: header declares %d tokens (%d bytes) but the file has %d bytes (trailing data: the header is wrong; regenerate it)", path, count, want, size)
	}
	if count == 0 {
		return 0, 0, fmt.Errorf("llm.c shard %s holds no tokens (regenerate it or leave it out)", path)
	}
	return HeaderBytes, int(count), nil
}

// header returns an llm.c header for count tokens.
func header(count int) []byte {
	b := make([]byte, HeaderBytes)
	binary.LittleEndian.PutUint32(b[0:], Magic)
	binary.LittleEndian.PutUint32(b[4:], Version)
	binary.LittleEndian.PutUint32(b[8:], uint32(count))
	return b
}
