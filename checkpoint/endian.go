package checkpoint

import (
	"errors"
	"unsafe"
)

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
