package mod

import (
	"math"

	"github.com/modcoord/modcoord/vecmath"
)

// exp and tanh dominate the elementwise work (softmax over T² scores per
// head, GELU over T·F activations). float64 uses the math package, which
// keeps the gradient checks exact; float32 uses polynomial approximations
// accurate to a few ulp that are several times faster.

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
		return F(tanh32(v))
	}
	return F(math.Tanh(float64(x)))
}

// tanh32 and exp32 live in vecmath, with their vectorised forms.
func tanh32(x float32) float32 { return vecmath.Tanh32(x) }
func exp32(x float32) float32  { return vecmath.Exp32(x) }
