package allreduce

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSumF32MatchesScalarLoop: the vector kernel gives the scalar loop's
// bits for every length (so every tail path) and offset (alignment),
// for ordinary, tiny (subnormal), huge and signed-zero values, and when
// dst is one of the operands, as the ring uses it.
func TestSumF32MatchesScalarLoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	specials := []float32{0, float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32, -1e-40, math.MaxFloat32, float32(math.Inf(1)), float32(math.Inf(-1))}
	value := func() float32 {
		if rng.IntN(8) == 0 {
			return specials[rng.IntN(len(specials))]
		}
		return float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10)))
	}
	for n := range 140 {
		for off := range 3 {
			left, right := make([]float32, n+off), make([]float32, n+off)
			for i := range left {
				left[i], right[i] = value(), value()
			}
			l, r := left[off:], right[off:]
			want := make([]float32, n)
			sumF32Generic(want, l, r)
			cases := map[string]func() []float32{
				"fresh dst": func() []float32 { d := make([]float32, n); SumF32(d, l, r); return d },
				"dst is left": func() []float32 {
					d := append([]float32(nil), l...)
					SumF32(d, d, r)
					return d
				},
				"dst is right": func() []float32 {
					d := append([]float32(nil), r...)
					SumF32(d, l, d)
					return d
				},
			}
			for name, run := range cases {
				if i, ok := sameBits(run(), want); !ok {
					t.Fatalf("n=%d off=%d %s: element %d differs", n, off, name, i)
				}
			}
		}
	}
}

func BenchmarkSumF32(b *testing.B) {
	const n = 8176 // one default chunk
	left, right, dst := make([]float32, n), make([]float32, n), make([]float32, n)
	b.Run("vector", func(b *testing.B) {
		b.SetBytes(4 * n)
		for range b.N {
			SumF32(dst, left, right)
		}
	})
	b.Run("scalar", func(b *testing.B) {
		b.SetBytes(4 * n)
		for range b.N {
			sumF32Generic(dst, left, right)
		}
	})
}
