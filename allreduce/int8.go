package allreduce

import (
	"context"
	"encoding/binary"
	"math"
)

// int8 reduce-scatter (DiLoCo's compressed outer gradients).
//
// A chunk travels as a float32 scale followed by one int8 per element,
// q = round(x/scale) with scale = max|x|/127, so each element costs a
// quarter of float32 and is off by at most scale/2 = max|x|/254. Every
// hop dequantizes what it received, adds its own float32 values (the
// received partial sum stays the left operand, as in float32) and
// quantizes the new partial sum for the next hop; the owner adds its own
// values to the last one in float32. Summation order, and so the result,
// is still fixed by World and the segment alone.

// int8ScaleBytes is the payload's prefix: the chunk's float32 scale.
const int8ScaleBytes = 4

// ReduceScatterInt8 is ReduceScatter with int8 payloads: the same segments
// and chunks, a quarter of the bytes (plus 4 per chunk), and a quantization
// error of at most max|partial sum|/254 per element per hop.
func (r *Ring) ReduceScatterInt8(ctx context.Context, step uint64, buf []float32) error {
	return r.run(ctx, "reduce-scatter-int8", step, r.newRingPass(phaseReduceScatterInt8, buf))
}

// QuantizeInt8 writes src as int8 into dst[int8ScaleBytes:] with its
// scale in the first 4 bytes (little-endian float32); len(dst) must be
// int8ScaleBytes+len(src). It returns the scale. A vector of zeros has
// scale 0; a non-finite element makes the scale non-finite, so the sum
// that uses it is too, and the trainer's finiteness checks catch it.
func QuantizeInt8(dst []byte, src []float32) float32 {
	var amax float32
	for _, v := range src {
		if a := float32(math.Abs(float64(v))); a > amax || a != a {
			amax = a
		}
	}
	scale := amax / 127
	binary.LittleEndian.PutUint32(dst, math.Float32bits(scale))
	q := dst[int8ScaleBytes:]
	if scale == 0 || math.IsNaN(float64(scale)) || math.IsInf(float64(scale), 0) {
		clear(q[:len(src)])
		return scale
	}
	inv := 1 / float64(scale)
	for i, v := range src {
		x := math.Round(float64(v) * inv)
		x = max(-127, min(127, x))
		q[i] = byte(int8(x))
	}
	return scale
}

// DequantizeAddInt8 sets dst[i] = q[i]·scale + dst[i] from a payload
// QuantizeInt8 wrote for len(dst) elements.
func DequantizeAddInt8(dst []float32, payload []byte) {
	scale := math.Float32frombits(binary.LittleEndian.Uint32(payload))
	q := payload[int8ScaleBytes:]
	for i := range dst {
		dst[i] = float32(int8(q[i]))*scale + dst[i]
	}
}

// DequantizeInt8 sets dst[i] = q[i]·scale.
func DequantizeInt8(dst []float32, payload []byte) {
	scale := math.Float32frombits(binary.LittleEndian.Uint32(payload))
	q := payload[int8ScaleBytes:]
	for i := range dst {
		dst[i] = float32(int8(q[i])) * scale
	}
}

// addInt8InPayload sets the payload to quantize(dequantize(payload) +
// own), in place: the partial sum forwarded to the next hop. scratch has
// len(own) floats.
func addInt8InPayload(payload []byte, own, scratch []float32) {
	copy(scratch, own)
	DequantizeAddInt8(scratch, payload)
	QuantizeInt8(payload, scratch)
}
