package vecmath

import (
	"math"
	"math/rand/v2"
	"testing"
)

// inputs sweeps the range the kernels see and beyond (the clamps, ±0,
// ±Inf, subnormals), then adds random values, in a slice whose length is
// not a multiple of 8 so that the scalar tail runs too.
func inputs(lo, hi float32) []float32 {
	var x []float32
	for v := lo; v < hi; v += (hi - lo) / 200003 {
		x = append(x, v)
	}
	x = append(x, 0, float32(math.Copysign(0, -1)), 1e-40, -1e-40, float32(math.Inf(1)), float32(math.Inf(-1)),
		88.7, 88.70001, -87.3, -87.30001, 7.905311, -7.905311, 7.9053116, -7.9053116)
	r := rand.New(rand.NewPCG(1, 2))
	for range 10001 {
		x = append(x, (r.Float32()*2-1)*hi)
	}
	return x
}

func sameBits(t *testing.T, what string, got, want, in []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s at x=%g (index %d): vector %g (%#x), scalar %g (%#x)", what, in[i], i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

func TestExpScaledMatchesScalarBitForBit(t *testing.T) {
	x := inputs(-100, 100)
	for _, c := range []struct{ scale, sub float32 }{{1, 0}, {0.125, 3.5}, {0.17677669, -2}} {
		want, got := make([]float32, len(x)), make([]float32, len(x))
		ExpScaledGeneric(want, x, c.scale, c.sub)
		ExpScaled(got, x, c.scale, c.sub)
		sameBits(t, "ExpScaled", got, want, x)
		for n := 0; n < 40; n++ { // every tail length, and in place
			inPlace := append([]float32(nil), x[:n]...)
			ExpScaled(inPlace, inPlace, c.scale, c.sub)
			sameBits(t, "ExpScaled in place", inPlace, want[:n], x[:n])
		}
	}
}

func TestGELUMatchesScalarBitForBit(t *testing.T) {
	x := inputs(-40, 40)
	wantY, wantTh := make([]float32, len(x)), make([]float32, len(x))
	gotY, gotTh := make([]float32, len(x)), make([]float32, len(x))
	GELUGeneric(wantY, wantTh, x)
	GELU(gotY, gotTh, x)
	sameBits(t, "GELU tanh", gotTh, wantTh, x)
	sameBits(t, "GELU", gotY, wantY, x)
	for n := 0; n < 40; n++ {
		y, th := make([]float32, n), make([]float32, n)
		GELU(y, th, x[:n])
		sameBits(t, "GELU tail", y, wantY[:n], x[:n])
	}
}

func TestScalarKernelsAreAccurate(t *testing.T) {
	cases := []struct {
		name     string
		f        func(float32) float32
		ref      func(float64) float64
		lo, hi   float64
		relLimit float64
	}{
		{"Exp32", Exp32, math.Exp, -80, 80, 5e-7},
		{"Tanh32", Tanh32, math.Tanh, -12, 12, 5e-7},
	}
	for _, c := range cases {
		var worst float64
		for x := c.lo; x < c.hi; x += 0.00731 {
			got, want := float64(c.f(float32(x))), c.ref(float64(float32(x)))
			d := math.Abs(got - want)
			if math.Abs(want) > 1e-3 {
				d /= math.Abs(want)
			}
			worst = math.Max(worst, d)
		}
		if worst > c.relLimit {
			t.Errorf("%s worst error %g > %g", c.name, worst, c.relLimit)
		}
	}
}

func BenchmarkExpScaled(b *testing.B) {
	x := make([]float32, 512)
	for i := range x {
		x[i] = float32(i) * 0.01
	}
	y := make([]float32, len(x))
	for _, k := range []struct {
		name string
		f    func(dst, src []float32, scale, sub float32)
	}{{"generic", ExpScaledGeneric}, {"vector", ExpScaled}} {
		b.Run(k.name, func(b *testing.B) {
			b.SetBytes(int64(8 * len(x)))
			for range b.N {
				k.f(y, x, 0.125, 5)
			}
		})
	}
}

func BenchmarkGELU(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i-2048) * 0.003
	}
	y, th := make([]float32, len(x)), make([]float32, len(x))
	for _, k := range []struct {
		name string
		f    func(y, th, x []float32)
	}{{"generic", GELUGeneric}, {"vector", GELU}} {
		b.Run(k.name, func(b *testing.B) {
			b.SetBytes(int64(12 * len(x)))
			for range b.N {
				k.f(y, th, x)
			}
		})
	}
}

func TestAdamWMatchesScalarBitForBit(t *testing.T) {
	const n = 10007
	r := rand.New(rand.NewPCG(5, 6))
	fill := func(scale float32, nonneg bool) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = (r.Float32()*2 - 1) * scale
			if nonneg {
				x[i] *= x[i]
			}
		}
		return x
	}
	p, g, m, v := fill(1, false), fill(3, false), fill(0.1, false), fill(0.1, true)
	g[0], g[1], v[2] = 0, 1e-30, 0
	for _, k := range []AdamW{
		{GradScale: 1, Beta1: 0.9, Beta2: 0.99, OneMinusB1: 1 - float32(0.9), OneMinusB2: 1 - float32(0.99), BiasCorr1: 0.1, BiasCorr2: 0.01, LR: 1e-3, Eps: 1e-8, Decay: 1},
		{GradScale: 0.37, Beta1: 0.9, Beta2: 0.999, OneMinusB1: 0.1, OneMinusB2: 0.001, BiasCorr1: 0.6513, BiasCorr2: 0.00995, LR: 2e-3, Eps: 1e-8, Decay: 0.9998},
	} {
		for _, size := range []int{n, 7, 8, 9, 31} {
			wp, wm, wv := append([]float32(nil), p[:size]...), append([]float32(nil), m[:size]...), append([]float32(nil), v[:size]...)
			gp, gm, gv := append([]float32(nil), p[:size]...), append([]float32(nil), m[:size]...), append([]float32(nil), v[:size]...)
			AdamWGeneric(wp, g, wm, wv, &k)
			AdamWUpdate(gp, g, gm, gv, &k)
			sameBits(t, "AdamW params", gp, wp, p)
			sameBits(t, "AdamW m", gm, wm, m)
			sameBits(t, "AdamW v", gv, wv, v)
		}
	}
}

func BenchmarkAdamW(b *testing.B) {
	const n = 1 << 20
	p, g, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range g {
		g[i] = float32(i%97) * 1e-3
	}
	k := AdamW{GradScale: 1, Beta1: 0.9, Beta2: 0.99, OneMinusB1: 0.1, OneMinusB2: 0.01, BiasCorr1: 0.5, BiasCorr2: 0.05, LR: 1e-3, Eps: 1e-8, Decay: 0.9999}
	for _, f := range []struct {
		name string
		f    func(p, g, m, v []float32, k *AdamW)
	}{{"generic", AdamWGeneric}, {"vector", AdamWUpdate}} {
		b.Run(f.name, func(b *testing.B) {
			b.SetBytes(7 * 4 * n)
			for range b.N {
				f.f(p, g, m, v, &k)
			}
		})
	}
}
