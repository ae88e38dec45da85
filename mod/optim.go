package mod

import (
	"math"

	"github.com/modcoord/modcoord/vecmath"
)

// OptimConfig holds AdamW's hyperparameters and the learning-rate schedule.
type OptimConfig struct {
	LR          float64 `json:"lr"`
	MinLR       float64 `json:"min_lr"`
	WarmupSteps int     `json:"warmup_steps"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	WeightDecay float64 `json:"weight_decay"`
	// ClipNorm is the maximum global gradient L2 norm; 0 disables clipping.
	ClipNorm float64 `json:"clip_norm"`
}

// DefaultOptim is tuned for the default config on the bundled corpus.
func DefaultOptim() OptimConfig {
	return OptimConfig{LR: 2e-3, MinLR: 2e-4, WarmupSteps: 50, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1, ClipNorm: 1.0}
}

// LRAt is the learning rate for step (0-based) of a run of total steps:
// linear warmup, then cosine decay to MinLR at the last step.
func (o OptimConfig) LRAt(step, total int) float64 {
	if step < o.WarmupSteps {
		return o.LR * float64(step+1) / float64(o.WarmupSteps)
	}
	if total <= o.WarmupSteps+1 {
		return o.LR
	}
	p := float64(step-o.WarmupSteps) / float64(total-1-o.WarmupSteps)
	if p > 1 {
		p = 1
	}
	return o.MinLR + 0.5*(o.LR-o.MinLR)*(1+math.Cos(math.Pi*p))
}

// ClipScale is the factor gradients are multiplied by so that their global
// norm is at most ClipNorm, given the global squared norm.
func (o OptimConfig) ClipScale(sumSquares float64) float64 {
	n := math.Sqrt(sumSquares)
	if o.ClipNorm <= 0 || n <= o.ClipNorm || n == 0 {
		return 1
	}
	return o.ClipNorm / n
}

// SumSquares is the squared L2 norm of g, accumulated in float64 in index
// order so that it is deterministic.
func SumSquares(g []float32) float64 {
	var s float64
	for _, v := range g {
		s += float64(v) * float64(v)
	}
	return s
}

// AdamWStep applies one AdamW update to the flat range [lo, hi) of the full
// parameter vector. params, grads, m and v hold exactly that range
// (len hi-lo). step is 1-based (for bias correction); gradScale multiplies
// the gradient first (gradient clipping). decay lists the [lo,hi) spans, in
// full-vector coordinates, that take weight decay (Layout.DecaySpans).
//
// Each worker calls this on the range it owns; a single process calls it
// on [0, M). The arithmetic is identical either way, element by element,
// which is what makes sharded training bit-identical to a single process.
func (o OptimConfig) AdamWStep(params, grads, m, v []float32, lo, hi int, decay [][2]int, step int, lr, gradScale float64) {
	b1, b2 := float32(o.Beta1), float32(o.Beta2)
	k := vecmath.AdamW{
		GradScale: float32(gradScale), Beta1: b1, Beta2: b2, OneMinusB1: 1 - b1, OneMinusB2: 1 - b2,
		BiasCorr1: float32(1 - math.Pow(o.Beta1, float64(step))),
		BiasCorr2: float32(1 - math.Pow(o.Beta2, float64(step))),
		LR:        float32(lr), Eps: float32(o.Eps),
	}
	wd := float32(1 - lr*o.WeightDecay)
	// The update is vecmath.AdamWUpdate: eight lanes at a time where the
	// CPU has AVX2, with the same bits as the scalar loop (AdamWGeneric).
	// A span without decay multiplies by 1, which changes no bits.
	update := func(a, b int, decayed bool) {
		k.Decay = 1
		if decayed {
			k.Decay = wd
		}
		vecmath.AdamWUpdate(params[a-lo:b-lo], grads[a-lo:b-lo], m[a-lo:b-lo], v[a-lo:b-lo], &k)
	}
	pos := lo
	for _, s := range decay {
		a, b := max(s[0], lo), min(s[1], hi)
		if a >= b {
			continue
		}
		if pos < a {
			update(pos, a, false)
		}
		update(a, b, true)
		pos = b
	}
	if pos < hi {
		update(pos, hi, false)
	}
}
