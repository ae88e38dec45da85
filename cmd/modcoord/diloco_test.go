package main

import (
	"strings"
	"testing"
)

// TestDiLoCoSpecRefusedByTrain: `modcoord train` is one process, so a job
// spec asking for DiLoCo is refused with the way out, not silently
// trained every step with DiLoCo's step count.
func TestDiLoCoSpecRefusedByTrain(t *testing.T) {
	spec := `name: j
data: x.txt
model: {d_model: 16, layers: 2, heads: 2, seq_len: 32}
batch: 4
budget_flops: 1e12
checkpoint_every: 10
eval_every: 10
`
	if _, err := loadTrainSpecFromString(spec); err != nil {
		t.Fatalf("every-step spec: %v", err)
	}
	_, err := loadTrainSpecFromString(spec + "sync: {mode: diloco, inner_steps: 5}\n")
	if err == nil || !strings.Contains(err.Error(), "sync.mode diloco") || !strings.Contains(err.Error(), "drop sync") {
		t.Fatalf("DiLoCo spec: %v", err)
	}
}
