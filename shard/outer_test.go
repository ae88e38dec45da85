package shard

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDiLoCoOuterNesterovHandComputed checks two outer steps on a
// two-element vector against values worked out by hand from
// m ← μm + g, θ ← θ − lr·(g + μm) (Nesterov) or θ ← θ − lr·m, with
// lr 0.7, μ 0.9 and two workers whose summed outer gradients are
// [0.2, −0.4] then [0.4, 0] (means [0.1, −0.2] then [0.2, 0]).
func TestDiLoCoOuterNesterovHandComputed(t *testing.T) {
	tests := []struct {
		name     string
		nesterov bool
		kind     Reduced
		reduced  [2][]float32 // what the ring summed, per step
		want     [2][]float64 // θ after each step
	}{
		{"nesterov, summed deltas", true, ReducedDeltas,
			[2][]float32{{0.2, -0.4}, {0.4, 0}},
			// step 1: m = [0.1, -0.2], d = g + 0.9m = [0.19, -0.38], θ = [1 - 0.133, -2 + 0.266]
			// step 2: m = [0.29, -0.18], d = [0.461, -0.162], θ = [0.867 - 0.3227, -1.734 + 0.1134]
			[2][]float64{{0.867, -1.734}, {0.5443, -1.6206}}},
		{"plain momentum, summed deltas", false, ReducedDeltas,
			[2][]float32{{0.2, -0.4}, {0.4, 0}},
			// step 1: θ = [1 - 0.07, -2 + 0.14]; step 2: m = [0.29, -0.18], θ = [0.93 - 0.203, -1.86 + 0.126]
			[2][]float64{{0.93, -1.86}, {0.727, -1.734}}},
		{"nesterov, summed local parameters", true, ReducedParams,
			// the workers' parameters sum to 2θ - 2g: [1.8, -3.6], then [2·0.867 - 0.4, 2·(-1.734)]
			[2][]float32{{1.8, -3.6}, {1.334, -3.468}},
			[2][]float64{{0.867, -1.734}, {0.5443, -1.6206}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := NewLayout(2, 1)
			o, err := NewOuterOptimizer(0.7, 0.9, tt.nesterov, l, 0)
			if err != nil {
				t.Fatal(err)
			}
			theta := []float32{1, -2}
			for s := range 2 {
				if err := o.Step(theta, tt.reduced[s], 2, tt.kind); err != nil {
					t.Fatal(err)
				}
				for i, w := range tt.want[s] {
					if math.Abs(float64(theta[i])-w) > 2e-6 {
						t.Errorf("step %d: θ[%d] = %.7f, hand-computed %.7f", s+1, i, theta[i], w)
					}
				}
			}
		})
	}
}

// TestDiLoCoOuterStepLandsOnWorker: with one worker, lr 1 and momentum 0
// the outer step must reproduce the worker's parameters bit for bit, even
// where they changed sign or scale (a float32 difference would round).
func TestDiLoCoOuterStepLandsOnWorker(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 4099
	l, _ := NewLayout(n, 1)
	for _, nesterov := range []bool{true, false} {
		o, err := NewOuterOptimizer(1, 0, nesterov, l, 0)
		if err != nil {
			t.Fatal(err)
		}
		global, local := make([]float32, n), make([]float32, n)
		for i := range global {
			global[i] = float32(rng.NormFloat64() * 0.02)
			local[i] = global[i] + float32(rng.NormFloat64()*0.05)
		}
		if err := o.Step(global, local, 1, ReducedParams); err != nil {
			t.Fatal(err)
		}
		for i := range global {
			if math.Float32bits(global[i]) != math.Float32bits(local[i]) {
				t.Fatalf("nesterov %v: θ[%d] = %v after the outer step, worker has %v", nesterov, i, global[i], local[i])
			}
		}
	}
}

// TestDiLoCoOuterStepTouchesOnlyItsRange: each rank updates its own range.
func TestDiLoCoOuterStepTouchesOnlyItsRange(t *testing.T) {
	l, _ := NewLayout(100, 3)
	global, reduced := make([]float32, 100), make([]float32, 100)
	for i := range reduced {
		reduced[i] = 1
	}
	o, err := NewOuterOptimizer(0.5, 0, true, l, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Step(global, reduced, 1, ReducedDeltas); err != nil {
		t.Fatal(err)
	}
	lo, hi := l.Range(1)
	for i, v := range global {
		if inside := i >= lo && i < hi; inside != (v != 0) {
			t.Fatalf("element %d (range [%d,%d)) = %v", i, lo, hi, v)
		}
	}
}

func TestDiLoCoOuterOptimizerRejects(t *testing.T) {
	l, _ := NewLayout(10, 2)
	for _, tt := range []struct {
		lr, mu float64
		rank   int
	}{{0, 0.9, 0}, {math.Inf(1), 0.9, 0}, {0.7, 1, 0}, {0.7, -0.1, 0}, {0.7, 0.9, 2}, {math.NaN(), 0, 0}} {
		if _, err := NewOuterOptimizer(tt.lr, tt.mu, true, l, tt.rank); err == nil {
			t.Errorf("NewOuterOptimizer(lr %v, μ %v, rank %d) succeeded", tt.lr, tt.mu, tt.rank)
		}
	}
	o, _ := NewOuterOptimizer(0.7, 0.9, true, l, 0)
	if err := o.Step(make([]float32, 5), make([]float32, 10), 2, ReducedDeltas); err == nil {
		t.Error("Step with a short vector succeeded")
	}
}
