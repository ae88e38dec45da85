package allreduce

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/modcoord/modcoord/shard"
)

// TestDiLoCoInt8QuantizeBounds: dequantize(quantize(x)) is within
// max|x|/254 of x element by element (up to float32 rounding), the scale
// is max|x|/127, zeros stay zeros and -128 is never used.
func TestDiLoCoInt8QuantizeBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	tests := []struct {
		name string
		x    []float32
	}{
		{"all zero", make([]float32, 33)},
		{"one element", []float32{-3.5}},
		{"mixed signs and scales", func() []float32 {
			x := make([]float32, 1000)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(5)-4)))
			}
			return x
		}()},
		{"tiny values", []float32{1e-30, -2e-30, 5e-31, 0}},
		{"one outlier", append(make([]float32, 100), 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := make([]byte, int8ScaleBytes+len(tt.x))
			scale := QuantizeInt8(payload, tt.x)
			var amax float64
			for _, v := range tt.x {
				amax = max(amax, math.Abs(float64(v)))
			}
			if want := float32(amax) / 127; scale != want {
				t.Fatalf("scale %v, want max|x|/127 = %v", scale, want)
			}
			back := make([]float32, len(tt.x))
			DequantizeInt8(back, payload)
			// Half a step, plus float32 rounding of the scale and product.
			bound := amax/254 + amax*0x1p-22
			for i, v := range tt.x {
				if err := math.Abs(float64(back[i]) - float64(v)); err > bound {
					t.Fatalf("x[%d] = %v comes back as %v: error %g over the bound %g", i, v, back[i], err, bound)
				}
				if v == 0 && back[i] != 0 {
					t.Fatalf("zero x[%d] comes back as %v", i, back[i])
				}
				if q := int8(payload[int8ScaleBytes+i]); q == -128 {
					t.Fatalf("x[%d] quantized to -128; the range is symmetric, [-127, 127]", i)
				}
			}
			// DequantizeAdd adds onto what is there.
			acc := make([]float32, len(tt.x))
			for i := range acc {
				acc[i] = 1
			}
			DequantizeAddInt8(acc, payload)
			for i := range acc {
				if acc[i] != back[i]+1 {
					t.Fatalf("DequantizeAdd: element %d = %v, want %v", i, acc[i], back[i]+1)
				}
			}
		})
	}
}

// TestDiLoCoInt8ReduceScatter: the int8 ring gives, bit for bit, the
// sequential reference (each hop dequantizes, adds its own values and
// requantizes; the owner adds its own in float32), and stays within the
// quantization bound of the exact sum.
func TestDiLoCoInt8ReduceScatter(t *testing.T) {
	checkGoroutines(t)
	for _, tt := range []struct{ world, n, chunk int }{{2, 100, 16}, {4, 4099, 64}, {3, 5, 16}} {
		rng := rand.New(rand.NewPCG(uint64(tt.world), 77))
		rings, _ := memRings(t, tt.world, tt.chunk, nil)
		xs := make([][]float32, tt.world)
		for r := range xs {
			xs[r] = make([]float32, tt.n)
			for i := range xs[r] {
				xs[r][i] = float32(rng.NormFloat64() * 0.01)
			}
		}
		bufs := cloneAll(xs)
		errs, _ := onAllRanks(tt.world, func(r int) error {
			return rings[r].ReduceScatterInt8(context.Background(), 5, bufs[r])
		})
		l := shard.Layout{Total: tt.n, World: tt.world}
		chunk := rings[0].passChunk(l)
		for r, err := range errs {
			if err != nil {
				t.Fatalf("world %d: rank %d: %v", tt.world, r, err)
			}
			lo, hi := l.Range(r)
			for a := lo; a < hi; a += chunk {
				b := min(a+chunk, hi)
				want := int8RingReference(xs, r, a, b)
				for i := a; i < b; i++ {
					if math.Float32bits(bufs[r][i]) != math.Float32bits(want[i-a]) {
						t.Fatalf("world %d rank %d element %d = %v, reference %v", tt.world, r, i, bufs[r][i], want[i-a])
					}
					var exact, amax float64
					for _, x := range xs {
						exact += float64(x[i])
						amax += math.Abs(float64(x[i]))
					}
					// Each of the world-1 quantized hops errs by at most
					// max|partial|/254 ≤ (chunk's sum of max|x_r|)/254.
					if d := math.Abs(float64(bufs[r][i]) - exact); d > float64(tt.world)*0.01*6/254*float64(tt.world) {
						t.Fatalf("world %d element %d: %v is %g from the exact sum %v", tt.world, i, bufs[r][i], d, exact)
					}
				}
			}
		}
	}
}

// int8RingReference is the int8 reduce-scatter of elements [a, b) (one
// chunk of owner's segment), done sequentially in the ring's order.
func int8RingReference(xs [][]float32, owner, a, b int) []float32 {
	world := len(xs)
	acc := append([]float32(nil), xs[(owner+1)%world][a:b]...)
	payload := make([]byte, int8ScaleBytes+b-a)
	for j := 2; j <= world; j++ {
		QuantizeInt8(payload, acc)
		copy(acc, xs[(owner+j)%world][a:b])
		DequantizeAddInt8(acc, payload)
	}
	return acc
}
