//go:build amd64

package vecmath

import (
	"math"

	"golang.org/x/sys/cpu"
)

// hasAVX2 is fixed at start-up and never written again.
var hasAVX2 = cpu.X86.HasAVX2

// The AVX2 kernels compute, eight lanes at a time, exactly the scalar
// Exp32 and Tanh32 arithmetic: the same constants (converted to float32 by
// the compiler, below, not written out by hand), the same operations in
// the same order, each one IEEE single-precision multiply, add, divide or
// conversion and never a fused multiply-add (the compiler fuses none at
// GOAMD64=v1). So the bits are those of the scalar loop, which the tests
// check over the whole input range; vectorizing changes speed only.

// lanes8 repeats a value in the eight lanes of a 256-bit register.
type lanes8 [8]float32

func splat(v float32) lanes8 { return lanes8{v, v, v, v, v, v, v, v} }

// expTable is Exp32's constants in the order expScaledAVX2 reads them.
var expTable = [...]lanes8{
	splat(1.4426950408889634),    // 0: log2e
	splat(0.5),                   // 1
	splat(0.693145751953125),     // 2: ln2hi
	splat(1.428606765330187e-06), // 3: ln2lo
	splat(1),                     // 4
	splat(1.0 / 720),             // 5
	splat(1.0 / 120),             // 6
	splat(1.0 / 24),              // 7
	splat(1.0 / 6),               // 8
	splat(88.7),                  // 9: above, +Inf
	splat(-87.3),                 // 10: below, 0
	splat(float32(math.Inf(1))),  // 11
}

// geluTable is GELUGeneric's and Tanh32's constants in the order
// geluAVX2 reads them.
var geluTable = [...]lanes8{
	splat(-2.76076847742355e-16), // 0..6: Tanh32's numerator, highest power first
	splat(2.00018790482477e-13),
	splat(-8.60467152213735e-11),
	splat(5.12229709037114e-08),
	splat(1.48572235717979e-05),
	splat(6.37261928875436e-04),
	splat(4.89352455891786e-03),
	splat(1.19825839466702e-06), // 7..10: denominator
	splat(1.18534705686654e-04),
	splat(2.26843463243900e-03),
	splat(4.89352518554385e-03),
	splat(7.90531110763549805),  // 11: clamp
	splat(-7.90531110763549805), // 12
	splat(1),                    // 13
	splat(-1),                   // 14
	splat(geluC),                // 15
	splat(0.044715),             // 16
	splat(0.5),                  // 17
}

//go:noescape
func expScaledAVX2(dst, src *float32, n int, scale, sub float32, k *lanes8)

//go:noescape
func geluAVX2(y, th, x *float32, n int, k *lanes8)

// ExpScaled sets dst[i] = Exp32(src[i]·scale − sub) for i < len(dst);
// src may be dst.
func ExpScaled(dst, src []float32, scale, sub float32) {
	n := len(dst)
	src = src[:n]
	v := 0
	if hasAVX2 && n >= 8 {
		v = n &^ 7
		expScaledAVX2(&dst[0], &src[0], v, scale, sub, &expTable[0])
	}
	ExpScaledGeneric(dst[v:], src[v:], scale, sub)
}

// GELU sets th[i] = tanh(√(2/π)·(x+0.044715x³)) and y[i] = x/2·(1+th[i]),
// the tanh approximation of GELU, for i < len(x).
func GELU(y, th, x []float32) {
	n := len(x)
	y, th = y[:n], th[:n]
	v := 0
	if hasAVX2 && n >= 8 {
		v = n &^ 7
		geluAVX2(&y[0], &th[0], &x[0], v, &geluTable[0])
	}
	GELUGeneric(y[v:], th[v:], x[v:])
}

//go:noescape
func adamwAVX2(param, grad, mom, vel *float32, n int, k *lanes8)

// AdamWUpdate applies one AdamW update to p with gradient g and moments
// m and v (all of len(p)), in place.
func AdamWUpdate(p, g, m, v []float32, k *AdamW) {
	n := len(p)
	g, m, v = g[:n], m[:n], v[:n]
	i := 0
	if hasAVX2 && n >= 8 {
		i = n &^ 7
		t := [...]lanes8{
			splat(k.GradScale), splat(k.Beta1), splat(k.OneMinusB1), splat(k.Beta2), splat(k.OneMinusB2),
			splat(k.BiasCorr1), splat(k.BiasCorr2), splat(k.LR), splat(k.Eps), splat(k.Decay),
		}
		adamwAVX2(&p[0], &g[0], &m[0], &v[0], i, &t[0])
	}
	AdamWGeneric(p[i:], g[i:], m[i:], v[i:], k)
}
