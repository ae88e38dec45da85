package jobspec

import (
	"runtime"
	"testing"
	"time"

	"github.com/modcoord/modcoord/mod"
)

// measuredModelHeap is the live heap that building a mod.Parallel of
// replicas replicas for batch sequences, and running one Forward and
// Backward, leaves behind: the parameters, every gradient and every
// activation buffer a training step keeps.
func measuredModelHeap(t *testing.T, cfg mod.Config, batch, replicas int) float64 {
	t.Helper()
	cfg = cfg.WithDefaults()
	T := cfg.SeqLen
	tokens, targets := make([]int32, batch*T), make([]int32, batch*T)
	for i := range tokens {
		tokens[i], targets[i] = int32(i%cfg.Vocab), int32((i+1)%cfg.Vocab)
	}
	var before, after runtime.MemStats
	settledHeap(&before)
	p, err := mod.NewParallel[float32](cfg, batch, replicas)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Forward(tokens, targets); err != nil {
		t.Fatal(err)
	}
	if err := p.Backward(); err != nil {
		t.Fatal(err)
	}
	settledHeap(&after)
	runtime.KeepAlive(p)
	return float64(after.HeapAlloc) - float64(before.HeapAlloc)
}

// settledHeap collects garbage until the live heap stops shrinking: the
// previous subtest's model is released by goroutines that end after its
// Close returns, and freeing it in the middle of a measurement would make
// the measured growth too small (even negative).
func settledHeap(ms *runtime.MemStats) {
	runtime.GC()
	runtime.ReadMemStats(ms)
	for range 20 {
		time.Sleep(10 * time.Millisecond)
		prev := ms.HeapAlloc
		runtime.GC()
		runtime.ReadMemStats(ms)
		if ms.HeapAlloc >= prev {
			return
		}
	}
}

// TestEstimateMatchesMeasuredHeap checks the model terms of the estimate
// (parameters, gradients, activations, logits) against the heap a real
// model holds after one step: never below it, and at most 15% above.
func TestEstimateMatchesMeasuredHeap(t *testing.T) {
	base := mod.Config{DModel: 64, Layers: 4, Heads: 4, SeqLen: 64, Capacity: 0.25}
	predictor := base
	predictor.Decision = mod.DecisionPredictor
	learned := base
	learned.Positions = mod.PositionsLearned
	dense := base.WithDefaults().Dense()
	bigVocab := base
	bigVocab.Vocab, bigVocab.SeqLen = 4096, 32
	tests := []struct {
		name            string
		cfg             mod.Config
		batch, replicas int
	}{
		{"MoD aux-loss", base, 8, 2},
		{"MoD predictor", predictor, 8, 2},
		{"learned positions", learned, 6, 3},
		{"dense", dense, 4, 1},
		{"logits dominate", bigVocab, 4, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec := Spec{Model: tc.cfg, Batch: tc.batch, MinWorkers: 1}.WithDefaults()
			est := EstimateWorkerMemory(spec, 1, tc.replicas)
			if est.Replicas != tc.replicas {
				t.Fatalf("estimate for %d replicas: %+v", tc.replicas, est)
			}
			model := est.Params + est.Grads + est.Activations + est.Logits
			got := measuredModelHeap(t, tc.cfg, tc.batch, tc.replicas)
			t.Logf("estimated %s, measured %s (ratio %.3f)", formatBytes(model), formatBytes(got), model/got)
			if model < got || model > 1.15*got {
				t.Errorf("model terms %s (%s) vs measured heap %s: want within [1, 1.15]×", formatBytes(model), est, formatBytes(got))
			}
		})
	}
}

// TestParamCountMatchesLayout keeps paramCount in step with mod.NewLayout.
func TestParamCountMatchesLayout(t *testing.T) {
	for _, c := range []mod.Config{
		mod.DefaultConfig(),
		{DModel: 64, Layers: 5, Heads: 2, SeqLen: 32, Decision: mod.DecisionPredictor},
		{DModel: 48, Layers: 3, Heads: 3, SeqLen: 16, Positions: mod.PositionsLearned, Vocab: 1000},
		mod.DefaultConfig().Dense(),
	} {
		c = c.WithDefaults()
		if got, want := paramCount(c), mod.NewLayout(c).Total; got != float64(want) {
			t.Errorf("%s: paramCount %v, layout %d", c, got, want)
		}
	}
}
