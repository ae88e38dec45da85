package allreduce

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// The wire format is little-endian. On little-endian machines (all the
// ones this runs on) a payload is reinterpreted in place instead of being
// decoded element by element; the loops below are the portable fallback
// for big-endian machines and misaligned buffers.

// littleEndian is fixed at start-up and never written again.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// f32View is b as float32s when that is the wire interpretation.
func f32View(b []byte) ([]float32, bool) {
	if !littleEndian || len(b)%4 != 0 {
		return nil, false
	}
	if len(b) == 0 {
		return nil, true
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4), true
}

// nativeBytes is the memory of f as bytes, for copying and socket I/O
// between two buffers of the same machine.
func nativeBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// putF32 encodes src into dst (len(dst) == 4*len(src)).
func putF32(dst []byte, src []float32) {
	if littleEndian {
		copy(dst, nativeBytes(src))
		return
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

// getF32 decodes payload into dst (len(payload) == 4*len(dst)).
func getF32(dst []float32, payload []byte) {
	if littleEndian {
		copy(nativeBytes(dst), payload)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(payload[4*i:]))
	}
}

// addF32 sets dst[i] = recv[i] + dst[i], recv being the encoded payload.
// The received partial sum is always the left operand; see sumOrder.
func addF32(dst []float32, payload []byte) {
	if p, ok := f32View(payload); ok {
		SumF32(dst, p, dst)
		return
	}
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(payload[4*i:])) + dst[i]
	}
}

// addF32InPayload sets recv[i] = recv[i] + own[i] inside the encoded
// payload, so a partial sum is forwarded without another buffer.
func addF32InPayload(payload []byte, own []float32) {
	if p, ok := f32View(payload); ok {
		SumF32(p[:len(own)], p, own)
		return
	}
	for i, o := range own {
		b := payload[4*i:]
		binary.LittleEndian.PutUint32(b, math.Float32bits(math.Float32frombits(binary.LittleEndian.Uint32(b))+o))
	}
}

func putF64(dst []byte, src []float64) {
	for i, v := range src {
		binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(v))
	}
}

func getF64(dst []float64, payload []byte) {
	for i := range dst {
		dst[i] = math.Float64frombits(binary.LittleEndian.Uint64(payload[8*i:]))
	}
}
