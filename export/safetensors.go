package export

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
)

// Tensor is one named float32 tensor, row-major.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// headerEntry is one tensor's record in a safetensors header.
type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// metadataKey is safetensors' reserved header key for string metadata.
const metadataKey = "__metadata__"

// maxHeaderBytes is the header size safetensors readers accept (100 MB);
// a larger header would write a file nobody can open.
const maxHeaderBytes = 100 << 20

// WriteSafetensors writes tensors as one safetensors file: an 8-byte
// little-endian header length N, N bytes of JSON header (padded with spaces
// so the data starts 8-byte aligned, which safetensors' zero-copy readers
// want), then every tensor's little-endian float32 data, contiguous, in the
// order given. metadata lands under __metadata__ (string values only, as
// the format requires).
func WriteSafetensors(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	header, err := safetensorsHeader(tensors, metadata)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	if _, err := bw.Write(n[:]); err != nil {
		return fmt.Errorf("write safetensors header length: %w", err)
	}
	if _, err := bw.Write(header); err != nil {
		return fmt.Errorf("write safetensors header: %w", err)
	}
	var buf [4096]byte
	for _, t := range tensors {
		for rest := t.Data; len(rest) > 0; {
			chunk := rest[:min(len(rest), len(buf)/4)]
			for i, v := range chunk {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
			if _, err := bw.Write(buf[:4*len(chunk)]); err != nil {
				return fmt.Errorf("write tensor %s: %w", t.Name, err)
			}
			rest = rest[len(chunk):]
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write safetensors data: %w", err)
	}
	return nil
}

// safetensorsHeader is the padded JSON header describing tensors.
func safetensorsHeader(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	entries := make(map[string]any, len(tensors)+1)
	if len(metadata) > 0 {
		entries[metadataKey] = metadata
	}
	var off int64
	for _, t := range tensors {
		if t.Name == "" || t.Name == metadataKey {
			return nil, fmt.Errorf("tensor name %q is not allowed in safetensors", t.Name)
		}
		if _, dup := entries[t.Name]; dup {
			return nil, fmt.Errorf("tensor %s is listed twice", t.Name)
		}
		size := 1
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %s: negative dimension in shape %v", t.Name, t.Shape)
			}
			size *= d
		}
		if size != len(t.Data) {
			return nil, fmt.Errorf("tensor %s: shape %v holds %d values, data has %d", t.Name, t.Shape, size, len(t.Data))
		}
		end := off + 4*int64(size)
		entries[t.Name] = headerEntry{DType: "F32", Shape: t.Shape, DataOffsets: [2]int64{off, end}}
		off = end
	}
	header, err := json.Marshal(entries)
	if err != nil {
		return nil, fmt.Errorf("encode safetensors header: %w", err)
	}
	if pad := (8 - (8+len(header))%8) % 8; pad > 0 {
		header = append(header, "       "[:pad]...)
	}
	if len(header) > maxHeaderBytes {
		return nil, fmt.Errorf("safetensors header of %d bytes is over the %d-byte limit readers accept", len(header), maxHeaderBytes)
	}
	return header, nil
}
