package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/mod"
)

func tinyModel(t *testing.T) (mod.Config, []float32) {
	t.Helper()
	cfg := mod.Config{DModel: 16, Layers: 2, Heads: 2, SeqLen: 8, Capacity: 0.5, Seed: 3}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	params := make([]float32, mod.NewLayout(cfg).Total)
	mod.InitParams(cfg, mod.NewLayout(cfg), params)
	return cfg, params
}

// generate crops as nanoGPT does: a prompt and output longer than seq_len
// work, and once the window is full each token depends on the last seq_len
// tokens only.
func TestGenerateCropsContext(t *testing.T) {
	cfg, params := tinyModel(t)
	for _, tc := range []struct {
		name   string
		prompt string
		n      int
	}{
		{"fits", "ab", 4},
		{"output past the context", "ab", 3 * cfg.SeqLen},
		{"prompt longer than the context", strings.Repeat("xyz", cfg.SeqLen), 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			texts, _, err := generate(context.Background(), cfg, params, []byte(tc.prompt), tc.n, 2, 0, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range texts {
				if len(s) != tc.n {
					t.Errorf("generated %d tokens, want %d", len(s), tc.n)
				}
			}
		})
	}
	// Greedy decoding of a long prompt equals that of its last seq_len
	// bytes: the model never sees further back.
	long := strings.Repeat("q", 5) + "the end!"
	a, _, err := generate(context.Background(), cfg, params, []byte(long), 2*cfg.SeqLen, 1, 0, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := generate(context.Background(), cfg, params, []byte(long[len(long)-cfg.SeqLen:]), 2*cfg.SeqLen, 1, 0, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a[0] != b[0] {
		t.Errorf("cropped prompt changed the output: %q vs %q", a[0], b[0])
	}
}

func TestWarmupWarning(t *testing.T) {
	o := mod.DefaultOptim()
	for _, tc := range []struct {
		steps int64
		warn  bool
	}{
		{1, true}, {int64(o.WarmupSteps) - 1, true}, {int64(o.WarmupSteps), false}, {600, false},
	} {
		if got := warmupWarning(tc.steps, o) != ""; got != tc.warn {
			t.Errorf("steps %d (warmup %d): warned %v, want %v", tc.steps, o.WarmupSteps, got, tc.warn)
		}
	}
}

// train and watch share one progress format.
func TestTrainProgressLine(t *testing.T) {
	var m rateMeter
	m.observe(10, timeAt(0))
	m.observe(20, timeAt(2)) // 5 steps/s
	line := progressText(progress{step: 20, total: 100, loss: 2.5, hasLoss: true, ema: true, lr: 1e-3, gradNorm: 0.5,
		tokPerS: 1000, budgetFrac: -1, eta: m.eta(20, 100), val: 2.25, valStep: 20})
	for _, want := range []string{"step 20/100 [", "20%", "train 2.5000 (ema)", "val 2.2500  ", "lr 1.00e-03", "1000 tok/s", "ETA 16s"} {
		if !strings.Contains(line, want) {
			t.Errorf("train progress %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "budget") {
		t.Errorf("train progress %q shows a budget it does not have", line)
	}
}

func timeAt(s float64) time.Time {
	return time.Unix(1_000_000, 0).Add(time.Duration(s * float64(time.Second)))
}
