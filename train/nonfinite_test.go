package train

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

func tinyTrainer(t *testing.T) *Trainer {
	t.Helper()
	ds, err := mod.LoadDataset("../data/tinyshakespeare.txt")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(TrainerConfig{Model: mod.Config{DModel: 32, Layers: 2, Heads: 2, SeqLen: 32, Capacity: 0.25, Seed: 5},
		Optim: mod.DefaultOptim(), GlobalBatch: 4, TotalSteps: 20, World: 1}, ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return tr
}

// TestAdversarialNonFiniteStepFails: once the weights hold a NaN (a
// diverged update, a flipped bit), the next step's loss is NaN: Step says
// so, naming the step, the value and the fix, and does not update the
// weights; a checkpoint of the state is refused.
func TestAdversarialNonFiniteStepFails(t *testing.T) {
	tr := tinyTrainer(t)
	ctx := context.Background()
	for range 3 {
		if _, err := tr.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.CheckFinite(); err != nil {
		t.Fatalf("a healthy state: %v", err)
	}
	if _, err := tr.ShardMeta("j", 1); err != nil {
		t.Fatalf("a healthy state's checkpoint: %v", err)
	}
	params := tr.Model().Params()
	for i := range params {
		params[i] = float32(math.NaN())
	}
	before := slices.Clone(tr.Optimizer().M)
	res, err := tr.Step(ctx)
	var nf *NonFiniteError
	if !errors.As(err, &nf) {
		t.Fatalf("step on NaN weights: %+v, %v; want a NonFiniteError", res, err)
	}
	for _, want := range []string{"step 4", "NaN", "lower optim.lr or set optim.clip_norm"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if tr.StepsDone() != 3 {
		t.Errorf("steps done %d after the refused step, want 3", tr.StepsDone())
	}
	if !slices.Equal(before, tr.Optimizer().M) {
		t.Error("the refused step updated the optimizer state")
	}
	if _, err := tr.ShardMeta("j", 1); !errors.As(err, &nf) {
		t.Errorf("checkpoint of a NaN state: %v; want a NonFiniteError", err)
	}
}

// TestCheckScalars: each non-finite quantity is named.
func TestCheckScalars(t *testing.T) {
	if err := checkScalars(1, 4, 2, 2.1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sq, loss, total float64
		what            string
	}{
		{4, math.NaN(), 2, "loss"},
		{4, 2, math.Inf(1), "objective"},
		{math.Inf(1), 2, 2, "gradient norm"},
		{math.NaN(), 2, 2, "gradient norm"},
	} {
		err := checkScalars(7, c.sq, c.loss, c.total)
		if err == nil || !strings.Contains(err.Error(), c.what) || !strings.Contains(err.Error(), "step 7") {
			t.Errorf("checkScalars(%v, %v, %v) = %v, want it to name %s", c.sq, c.loss, c.total, err, c.what)
		}
	}
}
