package isoflop

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// Schedule is the learning-rate schedule shared by every run: AdamW at
// mod.DefaultOptim's peak and floor, linear warmup over WarmupFrac of the
// run, cosine decay to the floor at the last step. Expressing warmup as a
// fraction keeps the schedule's shape the same whatever a run's step count,
// so a run is not favoured by having more steps after warmup.
type Schedule struct {
	Optim      mod.OptimConfig
	WarmupFrac float64
}

// DefaultSchedule warms up over the first 5% of a run.
func DefaultSchedule() Schedule {
	return Schedule{Optim: mod.DefaultOptim(), WarmupFrac: 0.05}
}

// For is the optimiser config of a run of steps steps.
func (s Schedule) For(steps int) mod.OptimConfig {
	o := s.Optim
	o.WarmupSteps = max(1, int(math.Round(s.WarmupFrac*float64(steps))))
	return o
}

// evalBatch is how many validation windows one forward pass scores.
const evalBatch = 16

// dataSeed fixes the order of training batches: every run sees the same
// sequences at the same step.
const dataSeed = 1

// Train runs spec to its last step and scores the result on the whole
// validation split. Cancelling ctx stops it between steps.
func Train(ctx context.Context, ds *mod.Dataset, spec RunSpec, sched Schedule, progress io.Writer) (Result, error) {
	res := newResult(spec)
	tr, err := train.NewTrainer(train.TrainerConfig{
		Model: spec.Model, Optim: sched.For(spec.Steps), GlobalBatch: spec.Batch,
		TotalSteps: int64(spec.Steps), Seed: dataSeed, Rank: 0, World: 1,
	}, ds, nil)
	if err != nil {
		return res, fmt.Errorf("run %s: %w", spec.ID(), err)
	}
	defer tr.Close()

	stepTimes := make([]float64, 0, spec.Steps)
	tail := max(1, spec.Steps/10)
	var tailLoss float64
	lastReport := time.Now()
	start := time.Now()
	for s := 0; s < spec.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("run %s interrupted at step %d of %d: %w", spec.ID(), s, spec.Steps, err)
		}
		t0 := time.Now()
		r, err := tr.Step(ctx)
		if err != nil {
			return res, fmt.Errorf("run %s: %w", spec.ID(), err)
		}
		stepTimes = append(stepTimes, time.Since(t0).Seconds())
		if math.IsNaN(r.Loss) || math.IsInf(r.Loss, 0) {
			return res, fmt.Errorf("run %s: loss is %v at step %d; the learning rate is too high for this shape", spec.ID(), r.Loss, r.Step)
		}
		if s >= spec.Steps-tail {
			tailLoss += r.Loss / float64(tail)
		}
		if time.Since(lastReport) > 10*time.Second {
			fmt.Fprintf(progress, "  step %d/%d  loss %.4f  %.1fs\n", r.Step, spec.Steps, r.Loss, time.Since(start).Seconds())
			lastReport = time.Now()
		}
	}
	res.WallS = time.Since(start).Seconds()
	res.StepS = res.WallS / float64(spec.Steps)
	res.MedianStepS = median(stepTimes)
	res.TrainLoss = tailLoss

	// Score twice: with top-k routing, as trained (the paper's isoFLOP
	// loss), and with the learned causal decision, as when sampling, since
	// top-k routing looks at the whole sequence and so at the future.
	evalStart := time.Now()
	rep, err := mod.EvaluateRouting(spec.Model, tr.Model().Params(), ds, 0, evalBatch)
	if err != nil {
		return res, fmt.Errorf("run %s: evaluate: %w", spec.ID(), err)
	}
	res.ValWindows = rep.Windows
	res.ValLoss, res.ValLossCausal = rep.ValLossTopK, rep.ValLossCausal
	res.CausalRouted = rep.RoutedFraction
	res.EvalS = time.Since(evalStart).Seconds()
	return res, nil
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
