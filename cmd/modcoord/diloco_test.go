package main

import (
	"context"
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

// TestBenchDiLoCoRefusesDeploymentUse: the benchmark's password-only NATS
// commands refuse public or wildcard addresses and short passwords, and a
// zero --inner-steps or --eval-every is a usage error, not a division by
// zero.
func TestBenchDiLoCoRefusesDeploymentUse(t *testing.T) {
	const pw = "0123456789abcdef0123"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nats wildcard", []string{"bench", "diloco-nats", "--host", "0.0.0.0", "--password", pw}, "loopback or private"},
		{"nats public", []string{"bench", "diloco-nats", "--host", "8.8.8.8", "--password", pw}, "loopback or private"},
		{"nats hostname", []string{"bench", "diloco-nats", "--host", "example.com", "--password", pw}, "loopback or private"},
		{"nats short password", []string{"bench", "diloco-nats", "--host", "127.0.0.1", "--password", "x"}, "at least 16"},
		{"rank public", []string{"bench", "diloco-rank", "--nats", "nats://8.8.8.8:4222", "--password", pw}, "loopback or private"},
		{"rank no password", []string{"bench", "diloco-rank"}, "at least 16"},
		{"rank eval-every 0", []string{"bench", "diloco-rank", "--password", pw, "--eval-every", "0"}, "at least 1"},
		{"rank inner 0", []string{"bench", "diloco-rank", "--password", pw, "--mode", "diloco", "--inner-steps", "0"}, "--inner-steps 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(context.Background(), nil, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Fatalf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, exitUsage, tc.want)
			}
		})
	}
}
