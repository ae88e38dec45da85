package shard

import (
	"fmt"

	"github.com/modcoord/modcoord/mod"
)

// Optimizer is the AdamW state of one rank: the first and second moments
// of its own range [Lo, Hi) and nothing else, so optimizer memory shrinks
// with the number of workers (ZeRO stage 1).
type Optimizer struct {
	Config mod.OptimConfig
	Lo, Hi int
	// Decay is the weight-decay spans of the full vector
	// ((*mod.Layout).DecaySpans), in full-vector coordinates.
	Decay [][2]int
	// M and V are the moments of [Lo, Hi), index 0 being element Lo. They
	// are exported so that checkpoints can save and restore them.
	M, V []float32
}

// NewOptimizer returns zeroed moments for rank's range of l.
func NewOptimizer(cfg mod.OptimConfig, l Layout, rank int, decay [][2]int) (*Optimizer, error) {
	if rank < 0 || rank >= l.World {
		return nil, fmt.Errorf("optimizer: rank %d outside world %d", rank, l.World)
	}
	lo, hi := l.Range(rank)
	return &Optimizer{Config: cfg, Lo: lo, Hi: hi, Decay: decay,
		M: make([]float32, hi-lo), V: make([]float32, hi-lo)}, nil
}

// Update applies AdamW step (1-based) to params[Lo:Hi] using grads[Lo:Hi].
// params and grads are full flat vectors; only the owned range is read or
// written, so the rest of grads may be reduce-scatter scratch. gradScale
// multiplies the gradient first (clipping, and 1/N if the all-reduce sums
// rather than averages).
func (o *Optimizer) Update(params, grads []float32, step int, lr, gradScale float64) error {
	if len(params) < o.Hi || len(grads) < o.Hi {
		return fmt.Errorf("optimizer update of [%d,%d): params has %d elements, grads %d", o.Lo, o.Hi, len(params), len(grads))
	}
	if len(o.M) != o.Hi-o.Lo || len(o.V) != o.Hi-o.Lo {
		return fmt.Errorf("optimizer update of [%d,%d): moments have %d and %d elements", o.Lo, o.Hi, len(o.M), len(o.V))
	}
	if step < 1 {
		return fmt.Errorf("optimizer update: step %d, steps are 1-based", step)
	}
	o.Config.AdamWStep(params[o.Lo:o.Hi], grads[o.Lo:o.Hi], o.M, o.V, o.Lo, o.Hi, o.Decay, step, lr, gradScale)
	return nil
}
