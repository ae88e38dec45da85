package export_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/export"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// tinyModel is small enough that a few training steps and the Python
// runs take seconds; capacity 0.25 of 32 tokens routes k = 8.
func tinyModel() mod.Config {
	return mod.Config{
		Vocab: 256, DModel: 32, Layers: 4, Heads: 4, SeqLen: 32, MLPHidden: 64,
		RoutedLayers: []int{1, 3}, Capacity: 0.25, PredictorHidden: 16, Seed: 7,
	}.WithDefaults()
}

// corpus is byte text with enough structure that a few steps move the
// weights (and the routers) away from their initial values.
func corpus() []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < 8192; i++ {
		fmt.Fprintf(&b, "line %d: the quick brown fox %s over the lazy dog %d times.\n", i, []string{"jumps", "leaps", "hops"}[i%3], i*i%97)
	}
	return b.Bytes()
}

// trainedCheckpoint trains cfg for a few steps with a World-1 trainer,
// commits a checkpoint with SaveLocal (what `modcoord train --out` does)
// and returns the store root and the step directory.
func trainedCheckpoint(t *testing.T, cfg mod.Config) (root, stepDir string) {
	t.Helper()
	ds, err := mod.NewDataset(corpus())
	if err != nil {
		t.Fatal(err)
	}
	opt := mod.DefaultOptim()
	opt.LR, opt.WarmupSteps = 1e-2, 0 // a few steps that change the weights visibly
	tr, err := train.NewTrainer(train.TrainerConfig{Model: cfg, Optim: opt, GlobalBatch: 4, TotalSteps: 3, Seed: 3, World: 1}, ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx := context.Background()
	for range 3 {
		if _, err := tr.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	root = t.TempDir()
	stepDir, err = tr.SaveLocal(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	return root, stepDir
}

// exportCheckpoint opens the checkpoint under path as `modcoord export`
// does and exports it to a fresh directory.
func exportCheckpoint(t *testing.T, path string) (string, *train.Opened, []float32) {
	t.Helper()
	ctx := context.Background()
	ck, err := train.OpenCheckpoint(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "export")
	if _, err := export.Checkpoint(ctx, ck, out); err != nil {
		t.Fatal(err)
	}
	params, err := ck.LoadParams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return out, ck, params
}

// python returns a python3 that passes check (a snippet that imports what
// the test needs), trying $MODCOORD_PYTHON, python3 on PATH, then
// /usr/bin/python3 (Debian's python3-torch installs for the system
// interpreter only, while PATH may lead to a pyenv one). Without one the
// test skips, or fails where MODCOORD_REQUIRE_TORCH=1 says that CI
// installed torch and a skip would hide a broken setup.
func python(t *testing.T, check, what string) string {
	t.Helper()
	var tried []string
	for _, py := range []string{os.Getenv("MODCOORD_PYTHON"), "python3", "/usr/bin/python3"} {
		if py == "" {
			continue
		}
		path, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if runPyOK(path, check) == nil {
			return path
		}
		tried = append(tried, path)
	}
	msg := fmt.Sprintf("no python3 with %s (tried %s); install it (Debian: apt-get install -y python3-torch) to run this test", what, strings.Join(tried, ", "))
	if os.Getenv("MODCOORD_REQUIRE_TORCH") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// runPy runs py with args from the repository root and returns stdout.
func runPy(t *testing.T, py string, env []string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", py, strings.Join(args, " "), err, errOut.String())
	}
	return out.Bytes()
}

// runPyOK runs py -c code and reports whether it succeeded.
func runPyOK(py, code string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return exec.CommandContext(ctx, py, "-c", code).Run()
}
