package main

import (
	"context"
	"encoding/json"
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
		{"rank warm-up mid-round", []string{"bench", "diloco-rank", "--password", pw, "--mode", "diloco", "--inner-steps", "20", "--sync-warmup", "30"}, "--sync-warmup 30"},
		{"local lr 0", []string{"bench", "diloco-local", "--lr", "0"}, "--lr 0"},
		{"local world 0", []string{"bench", "diloco-local", "--world", "0"}, "--world 0"},
		{"local world over the batch", []string{"bench", "diloco-local", "--world", "17"}, "--world 17"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(context.Background(), nil, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Fatalf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, exitUsage, tc.want)
			}
		})
	}
}

// TestDiLoCoBenchLocalRun: diloco-local trains every rank in one process
// and prints one line per evaluation, the last with the held-out loss
// (the windows after --eval-windows) and the all-window loss; a warm-up
// shows in the run's name and delays the first outer step.
func TestDiLoCoBenchLocalRun(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the benchmark's model for 4 steps")
	}
	code, stdout, stderr := run(context.Background(), nil, "bench", "diloco-local", "--data", "../../data/tinyshakespeare.txt",
		"--world", "2", "--steps", "4", "--mode", "diloco", "--inner-steps", "2", "--eval-every", "2", "--sync-warmup", "2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var pts []benchLocalPoint
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var p benchLocalPoint
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		pts = append(pts, p)
	}
	if len(pts) != 2 || pts[0].Step != 2 || pts[1].Step != 4 {
		t.Fatalf("evaluations %+v, want after steps 2 and 4", pts)
	}
	if pts[0].Mode != "diloco-h2-w2" || pts[0].OuterSteps != 0 || pts[1].OuterSteps != 1 {
		t.Errorf("points %+v and %+v: want mode diloco-h2-w2, no outer step in the warm-up and one after", pts[0], pts[1])
	}
	last := pts[1]
	if pts[0].HeldOut != 0 || !(last.HeldOut > 0) || last.HeldOutWindows[0] != 32 || !(last.ValLossAll > 0) || !(last.ValLoss > 0) {
		t.Errorf("last point %+v: want a held-out loss over windows from 32 and an all-window loss, on the last line only", last)
	}
}
