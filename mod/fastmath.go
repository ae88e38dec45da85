package mod

import "math"

// exp and tanh dominate the elementwise work (softmax over T² scores per
// head, GELU over T·F activations). float64 uses the math package, which
// keeps the gradient checks exact; float32 uses a range-reduced polynomial
// accurate to ~2 ulp that is several times faster than math.Exp.

func exp[F Float](x F) F {
	switch v := any(x).(type) {
	case float32:
		return F(exp32(v))
	}
	return F(math.Exp(float64(x)))
}

func tanh[F Float](x F) F {
	switch v := any(x).(type) {
	case float32:
		// tanh(x) = 1 − 2/(e^{2x}+1), clamped where e^{2x} overflows.
		if v > 9 {
			return 1
		}
		if v < -9 {
			return -1
		}
		if v > -0.0625 && v < 0.0625 {
			// Cancellation in 1 − 2/(e^{2x}+1) loses digits near 0; use the series.
			v2 := v * v
			return F(v * (1 + v2*(-1.0/3+v2*(2.0/15-v2*17.0/315))))
		}
		return F(1 - 2/(exp32(2*v)+1))
	}
	return F(math.Tanh(float64(x)))
}

// exp32 computes e^x as 2^n · e^r with |r| ≤ ln2/2 and a degree-6 Taylor
// polynomial for e^r.
func exp32(x float32) float32 {
	if x > 88.7 {
		return float32(math.Inf(1))
	}
	if x < -87.3 {
		return 0
	}
	const ln2hi, ln2lo, log2e = 0.693145751953125, 1.428606765330187e-06, 1.4426950408889634
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	r := (x - n*ln2hi) - n*ln2lo
	p := 1 + r*(1+r*(0.5+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720))))))
	return math.Float32frombits(math.Float32bits(p) + uint32(int32(n))<<23)
}
