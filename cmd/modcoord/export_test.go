package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// savedCheckpoint commits a checkpoint of a tiny untrained model under a
// fresh store root, as `modcoord train --out` does, and returns the root.
func savedCheckpoint(t *testing.T) string {
	t.Helper()
	cfg := mod.Config{Vocab: 256, DModel: 16, Layers: 2, Heads: 2, SeqLen: 16, MLPHidden: 32, Seed: 1}.WithDefaults()
	ds, err := mod.NewDataset([]byte(strings.Repeat("export me, please. ", 20)))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := train.NewTrainer(train.TrainerConfig{Model: cfg, Optim: mod.DefaultOptim(), GlobalBatch: 1, TotalSteps: 1, World: 1}, ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	root := t.TempDir()
	if _, err := tr.SaveLocal(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestExportCmd(t *testing.T) {
	root := savedCheckpoint(t)
	taken := t.TempDir()
	if err := os.WriteFile(filepath.Join(taken, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"exports", []string{"export", "--checkpoint", root, "--out", filepath.Join(t.TempDir(), "e")}, exitOK, "exported step 0", ""},
		{"--json", []string{"export", "--checkpoint", root, "--out", filepath.Join(t.TempDir(), "e"), "--json"}, exitOK, `"tensors":`, ""},
		{"no --out", []string{"export", "--checkpoint", root}, exitUsage, "", "--out is required"},
		{"no --checkpoint", []string{"export", "--out", filepath.Join(t.TempDir(), "e")}, exitUsage, "", "--checkpoint is required"},
		{"not a checkpoint", []string{"export", "--checkpoint", t.TempDir(), "--out", filepath.Join(t.TempDir(), "e")}, exitFailure, "", "open checkpoint"},
		{"out not empty", []string{"export", "--checkpoint", root, "--out", taken}, exitFailure, "", "not empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(context.Background(), nil, tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("modcoord %q: exit %d (want %d)\nstdout: %s (want %q)\nstderr: %s (want %q)", tc.args, code, tc.code, stdout, tc.stdout, stderr, tc.stderr)
			}
		})
	}
}
