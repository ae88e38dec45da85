package shard

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

// TestShardedUpdateMatchesWholeVector runs a few AdamW steps on the whole
// vector in one optimizer and on every range of a layout in separate
// optimizers; the parameters must agree bit for bit.
func TestShardedUpdateMatchesWholeVector(t *testing.T) {
	cfg := mod.DefaultConfig()
	ml := mod.NewLayout(cfg)
	decay := ml.DecaySpans()
	rng := rand.New(rand.NewPCG(5, 6))
	init := make([]float32, ml.Total)
	for i := range init {
		init[i] = float32(rng.NormFloat64() * 0.02)
	}
	grads := make([][]float32, 3)
	for s := range grads {
		grads[s] = make([]float32, ml.Total)
		for i := range grads[s] {
			grads[s][i] = float32(rng.NormFloat64())
		}
	}
	ocfg := mod.DefaultOptim()

	whole := append([]float32(nil), init...)
	one, _ := NewLayout(ml.Total, 1)
	ref, err := NewOptimizer(ocfg, one, 0, decay)
	if err != nil {
		t.Fatal(err)
	}
	for s, g := range grads {
		if err := ref.Update(whole, g, s+1, ocfg.LRAt(s, 10), 0.5); err != nil {
			t.Fatal(err)
		}
	}

	for _, world := range []int{2, 3, 7, 16} {
		l, _ := NewLayout(ml.Total, world)
		params := append([]float32(nil), init...)
		opts := make([]*Optimizer, world)
		for r := range opts {
			if opts[r], err = NewOptimizer(ocfg, l, r, decay); err != nil {
				t.Fatal(err)
			}
		}
		for s, g := range grads {
			for _, o := range opts {
				if err := o.Update(params, g, s+1, ocfg.LRAt(s, 10), 0.5); err != nil {
					t.Fatal(err)
				}
			}
		}
		for i := range params {
			if math.Float32bits(params[i]) != math.Float32bits(whole[i]) {
				t.Fatalf("world %d: param %d = %v, whole-vector update gives %v", world, i, params[i], whole[i])
			}
		}
		for r, o := range opts {
			if len(o.M) != l.Len(r) {
				t.Errorf("world %d rank %d: %d moments for a range of %d", world, r, len(o.M), l.Len(r))
			}
		}
	}
}

func TestOptimizerRejects(t *testing.T) {
	l, _ := NewLayout(100, 2)
	if _, err := NewOptimizer(mod.DefaultOptim(), l, 2, nil); err == nil {
		t.Error("NewOptimizer for a rank outside the world succeeded")
	}
	o, _ := NewOptimizer(mod.DefaultOptim(), l, 1, nil)
	tests := []struct {
		name   string
		params []float32
		grads  []float32
		step   int
	}{
		{"short params", make([]float32, 50), make([]float32, 100), 1},
		{"short grads", make([]float32, 100), make([]float32, 99), 1},
		{"step 0", make([]float32, 100), make([]float32, 100), 0},
	}
	for _, tt := range tests {
		if err := o.Update(tt.params, tt.grads, tt.step, 1e-3, 1); err == nil {
			t.Errorf("%s: Update succeeded", tt.name)
		}
	}
}
