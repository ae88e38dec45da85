package vecmath

import "math"

// Tanh32 is a [13/6] odd rational approximation of tanh on [-7.9, 7.9]
// (the coefficients are those of Eigen's ptanh_float), ±1 beyond.
func Tanh32(x float32) float32 {
	const clamp = 7.90531110763549805
	if x > clamp {
		return 1
	}
	if x < -clamp {
		return -1
	}
	x2 := x * x
	p := x2*-2.76076847742355e-16 + 2.00018790482477e-13
	p = p*x2 + -8.60467152213735e-11
	p = p*x2 + 5.12229709037114e-08
	p = p*x2 + 1.48572235717979e-05
	p = p*x2 + 6.37261928875436e-04
	p = p*x2 + 4.89352455891786e-03
	p *= x
	q := x2*1.19825839466702e-06 + 1.18534705686654e-04
	q = q*x2 + 2.26843463243900e-03
	q = q*x2 + 4.89352518554385e-03
	return p / q
}

// Exp32 computes e^x as 2^n · e^r with |r| ≤ ln2/2 and a degree-6 Taylor
// polynomial for e^r.
func Exp32(x float32) float32 {
	if x > 88.7 {
		return float32(math.Inf(1))
	}
	if x < -87.3 {
		return 0
	}
	const ln2hi, ln2lo, log2e = 0.693145751953125, 1.428606765330187e-06, 1.4426950408889634
	// Round to nearest by truncating t+0.5 and fixing up negatives:
	// math.Floor would cost a float64 round trip and a call.
	t := x*log2e + 0.5
	ni := int32(t)
	if float32(ni) > t {
		ni--
	}
	n := float32(ni)
	r := (x - n*ln2hi) - n*ln2lo
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
	return math.Float32frombits(math.Float32bits(p) + uint32(ni)<<23)
}

// ExpScaledGeneric is ExpScaled one element at a time.
func ExpScaledGeneric(dst, src []float32, scale, sub float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] = Exp32(src[i]*scale - sub)
	}
}

// geluC is sqrt(2/π).
const geluC = 0.7978845608028654

// GELUGeneric is GELU one element at a time.
func GELUGeneric(y, th, x []float32) {
	y, th = y[:len(x)], th[:len(x)]
	for i, v := range x {
		t := Tanh32(geluC * (v + 0.044715*v*v*v))
		th[i] = t
		y[i] = 0.5 * v * (1 + t)
	}
}

// AdamW holds one AdamW step's constants, already in float32 as the
// update uses them; see mod.OptimConfig.AdamWStep.
type AdamW struct {
	GradScale    float32 // multiplies the gradient first (clipping)
	Beta1, Beta2 float32
	OneMinusB1   float32 // 1 − Beta1, in float32 arithmetic
	OneMinusB2   float32 // 1 − Beta2
	BiasCorr1    float32 // 1 − Beta1^step
	BiasCorr2    float32 // 1 − Beta2^step
	LR, Eps      float32
	Decay        float32 // 1 − lr·weight_decay, or 1 where there is no decay
}

// AdamWGeneric is AdamWUpdate one element at a time.
func AdamWGeneric(p, g, m, v []float32, k *AdamW) {
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	for i := range p {
		gi := g[i] * k.GradScale
		mi := k.Beta1*m[i] + k.OneMinusB1*gi
		vi := k.Beta2*v[i] + k.OneMinusB2*gi*gi
		m[i], v[i] = mi, vi
		// sqrt in float64 rounded to float32 is the correctly rounded
		// float32 sqrt, which is what the vector kernel's VSQRTPS gives.
		p[i] = p[i]*k.Decay - k.LR*(mi/k.BiasCorr1)/(float32(math.Sqrt(float64(vi/k.BiasCorr2)))+k.Eps)
	}
}
