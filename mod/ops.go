package mod

import (
	"math"

	"github.com/modcoord/modcoord/vecmath"
)

// One function per operation, forward and backward, as in llm.c. Shapes are
// given explicitly; buffers are owned by the caller and never allocated here.

// rmsnormForward: y[i,:] = x[i,:] · inv[i] · w, inv[i] = 1/sqrt(mean(x[i,:]²)+eps).
// inv is kept for the backward pass.
func rmsnormForward[F Float](y, inv, x, w []F, rows, d int, eps float64) {
	for i := 0; i < rows; i++ {
		xr, yr := x[i*d:(i+1)*d], y[i*d:(i+1)*d]
		var ss float64
		for _, v := range xr {
			ss += float64(v) * float64(v)
		}
		s := F(1 / math.Sqrt(ss/float64(d)+eps))
		inv[i] = s
		for j, v := range xr {
			yr[j] = v * s * w[j]
		}
	}
}

// rmsnormBackward adds to dx the input gradient and to dw the gain
// gradient, given dy:
// dx = s·(dy⊙w) − s³/d · x · Σ(dy⊙w⊙x).
func rmsnormBackward[F Float](dx, dw, dy, x, inv, w []F, rows, d int) {
	for i := 0; i < rows; i++ {
		xr, dyr, dxr := x[i*d:(i+1)*d], dy[i*d:(i+1)*d], dx[i*d:(i+1)*d]
		s := inv[i]
		var dot float64
		for j, v := range xr {
			g := dyr[j] * w[j]
			dot += float64(g) * float64(v)
			dw[j] += dyr[j] * v * s
		}
		c := F(dot) * s * s * s / F(d)
		for j, v := range xr {
			dxr[j] += s*dyr[j]*w[j] - c*v
		}
	}
}

const geluC = 0.7978845608028654 // sqrt(2/π)

// geluForward is GELU with the tanh approximation (as GPT-2 and
// torch's approximate='tanh'). It keeps th = tanh(·) for the backward pass,
// which saves recomputing the most expensive part.
func geluForward[F Float](y, th, x []F) {
	if x32, ok := any(x).([]float32); ok {
		vecmath.GELU(any(y).([]float32), any(th).([]float32), x32)
		return
	}
	for i, v := range x {
		u := F(geluC) * (v + 0.044715*v*v*v)
		t := tanh(u)
		th[i] = t
		y[i] = 0.5 * v * (1 + t)
	}
}

// geluBackward sets dx = dy · gelu'(x), given th from geluForward.
func geluBackward[F Float](dx, dy, x, th []F) {
	for i, v := range x {
		t := th[i]
		du := F(geluC) * (1 + 3*0.044715*v*v)
		dx[i] = dy[i] * (0.5*(1+t) + 0.5*v*(1-t*t)*du)
	}
}

// ropeTables holds cos and sin of pos·θ^(−2j/hd) for pos < T, j < hd/2.
func ropeTables[F Float](T, hd int, theta float64) (cos, sin []F) {
	half := hd / 2
	cos, sin = make([]F, T*half), make([]F, T*half)
	for p := 0; p < T; p++ {
		for j := 0; j < half; j++ {
			a := float64(p) * math.Pow(theta, -2*float64(j)/float64(hd))
			cos[p*half+j], sin[p*half+j] = F(math.Cos(a)), F(math.Sin(a))
		}
	}
	return cos, sin
}

// causalSoftmax turns scores [s,s] into probabilities in place: row i is
// scaled, softmaxed over columns 0..i, and zero beyond (the causal mask).
func causalSoftmax[F Float](p []F, s int, scale F) {
	if p32, ok := any(p).([]float32); ok {
		causalSoftmax32(p32, s, float32(scale))
		return
	}
	for i := 0; i < s; i++ {
		row := p[i*s : (i+1)*s]
		mx := row[0] * scale
		for j := 1; j <= i; j++ {
			if v := row[j] * scale; v > mx {
				mx = v
			}
		}
		var sum F
		for j := 0; j <= i; j++ {
			e := exp(row[j]*scale - mx)
			row[j] = e
			sum += e
		}
		r := 1 / sum
		for j := 0; j <= i; j++ {
			row[j] *= r
		}
		for j := i + 1; j < s; j++ {
			row[j] = 0
		}
	}
}

// causalSoftmax32 is causalSoftmax with exp32, eight lanes at a time
// where the CPU has AVX2 (vecmath.ExpScaled: the same bits as the scalar
// loop). The sum stays a scalar loop in index order, so the result is
// bit-identical to the generic version.
func causalSoftmax32(p []float32, s int, scale float32) {
	for i := 0; i < s; i++ {
		row := p[i*s : (i+1)*s]
		mx := row[0] * scale
		for j := 1; j <= i; j++ {
			mx = max(mx, row[j]*scale)
		}
		vecmath.ExpScaled(row[:i+1], row[:i+1], scale, mx)
		var sum float32
		for _, e := range row[:i+1] {
			sum += e
		}
		r := 1 / sum
		for j := 0; j <= i; j++ {
			row[j] *= r
		}
		clear(row[i+1:])
	}
}

// causalSoftmaxBackward turns dp [s,s] (gradient wrt probabilities) into
// the gradient wrt the raw scores, in place:
// ds_ij = scale · p_ij · (dp_ij − Σ_k p_ik dp_ik) for j ≤ i, 0 beyond.
func causalSoftmaxBackward[F Float](dp, p []F, s int, scale F) {
	for i := 0; i < s; i++ {
		pr, dr := p[i*s:(i+1)*s], dp[i*s:(i+1)*s]
		var dot F
		for j := 0; j <= i; j++ {
			dot += pr[j] * dr[j]
		}
		for j := 0; j <= i; j++ {
			dr[j] = scale * pr[j] * (dr[j] - dot)
		}
		for j := i + 1; j < s; j++ {
			dr[j] = 0
		}
	}
}

func sigmoid[F Float](x F) F {
	if x >= 0 {
		return 1 / (1 + exp(-x))
	}
	e := exp(x)
	return e / (1 + e)
}

// bceWithLogits is −[t·log σ(z) + (1−t)·log(1−σ(z))], computed stably.
func bceWithLogits(z, t float64) float64 {
	return math.Max(z, 0) - z*t + math.Log1p(math.Exp(-math.Abs(z)))
}

func add[F Float](dst, a []F) {
	for i := range dst {
		dst[i] += a[i]
	}
}

func zero[F Float](x []F) {
	clear(x)
}

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
