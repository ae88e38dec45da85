package shard

import (
	"fmt"
	"math"
)

// OuterOptimizer is DiLoCo's outer SGD with (Nesterov) momentum for one
// rank's range [Lo, Hi): like Optimizer, each rank keeps the momentum of
// its own range only, and the all-gather hands the updated parameters to
// everyone. With outer gradient g (the global parameters minus the
// workers' mean), momentum μ and learning rate lr:
//
//	m ← μ·m + g
//	θ ← θ − lr·(g + μ·m)    Nesterov
//	θ ← θ − lr·m            otherwise
//
// which is PyTorch's SGD(momentum=μ, nesterov=...), the DiLoCo paper's
// outer optimizer. g and the step are computed in float64 and rounded once
// into θ, so with one worker, lr 1 and μ 0 the step lands exactly on the
// worker's parameters (θ − (θ − θ_local) = θ_local).
type OuterOptimizer struct {
	LR, Momentum float64
	Nesterov     bool
	Lo, Hi       int
	// M is the momentum of [Lo, Hi), index 0 being element Lo; exported
	// so that checkpoints can save and restore it.
	M []float32
}

// NewOuterOptimizer returns zero momentum for rank's range of l.
func NewOuterOptimizer(lr, momentum float64, nesterov bool, l Layout, rank int) (*OuterOptimizer, error) {
	if rank < 0 || rank >= l.World {
		return nil, fmt.Errorf("outer optimizer: rank %d outside world %d", rank, l.World)
	}
	if !(lr > 0) || math.IsInf(lr, 0) || !(momentum >= 0 && momentum < 1) {
		return nil, fmt.Errorf("outer optimizer: learning rate %v must be positive and finite, momentum %v in [0, 1)", lr, momentum)
	}
	lo, hi := l.Range(rank)
	return &OuterOptimizer{LR: lr, Momentum: momentum, Nesterov: nesterov, Lo: lo, Hi: hi, M: make([]float32, hi-lo)}, nil
}

// Reduced says what the ring summed over the world's ranks.
type Reduced int

const (
	// ReducedParams is the sum of the ranks' local parameters: the outer
	// gradient is θ − sum/world. Exact for one worker.
	ReducedParams Reduced = iota
	// ReducedDeltas is the sum of the ranks' outer gradients θ − θ_local
	// (what an int8 ring carries: small values quantize well).
	ReducedDeltas
)

// Step applies one outer step to global[Lo:Hi], the global parameters of
// the round's start, from reduced[Lo:Hi], the ring's sum over world ranks
// of what kind names. Both are full flat vectors; only [Lo, Hi) is read or
// written.
func (o *OuterOptimizer) Step(global, reduced []float32, world int, kind Reduced) error {
	if len(global) < o.Hi || len(reduced) < o.Hi {
		return fmt.Errorf("outer step of [%d,%d): global has %d elements, reduced %d", o.Lo, o.Hi, len(global), len(reduced))
	}
	if len(o.M) != o.Hi-o.Lo {
		return fmt.Errorf("outer step of [%d,%d): momentum has %d elements", o.Lo, o.Hi, len(o.M))
	}
	if world < 1 {
		return fmt.Errorf("outer step: world %d", world)
	}
	inv := 1 / float64(world)
	mu, lr := o.Momentum, o.LR
	th, red := global[o.Lo:o.Hi], reduced[o.Lo:o.Hi]
	for i := range th {
		t := float64(th[i])
		var g float64
		if kind == ReducedParams {
			g = t - float64(red[i])*inv
		} else {
			g = float64(red[i]) * inv
		}
		m := mu*float64(o.M[i]) + g
		d := m
		if o.Nesterov {
			d = g + mu*m
		}
		o.M[i] = float32(m)
		th[i] = float32(t - lr*d)
	}
	return nil
}
