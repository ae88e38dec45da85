//go:build !amd64

package vecmath

// ExpScaled sets dst[i] = Exp32(src[i]·scale − sub) for i < len(dst).
func ExpScaled(dst, src []float32, scale, sub float32) { ExpScaledGeneric(dst, src, scale, sub) }

// GELU sets th[i] = tanh(√(2/π)·(x+0.044715x³)) and y[i] = x/2·(1+th[i]),
// the tanh approximation of GELU, for i < len(x).
func GELU(y, th, x []float32) { GELUGeneric(y, th, x) }

// AdamWUpdate applies one AdamW update to p with gradient g and moments
// m and v (all of len(p)), in place.
func AdamWUpdate(p, g, m, v []float32, k *AdamW) { AdamWGeneric(p, g, m, v, k) }
