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

// Train runs spec to its last step and scores the result on the whole
// validation split. The run's seed fixes both the initialisation and the
// order of training batches, so that every variant and shape of one seed
// sees the same sequences at the same step. Cancelling ctx stops it between
// steps. now is the clock for the wall-clock fields (nil: time.Now).
func Train(ctx context.Context, ds *mod.Dataset, spec RunSpec, sched Schedule, progress io.Writer, now func() time.Time) (Result, error) {
	if now == nil {
		now = time.Now
	}
	since := func(t time.Time) time.Duration { return now().Sub(t) }
	res := newResult(spec)
	tr, err := train.NewTrainer(train.TrainerConfig{
		Model: spec.Model, Optim: sched.For(spec.Steps), GlobalBatch: spec.Batch,
		TotalSteps: int64(spec.Steps), Seed: uint64(spec.Seed), Rank: 0, World: 1,
	}, ds, nil)
	if err != nil {
		return res, fmt.Errorf("run %s: %w", spec.ID(), err)
	}
	defer tr.Close()

	stepTimes := make([]float64, 0, spec.Steps)
	tail := max(1, spec.Steps/10)
	var tailLoss float64
	lastReport := now()
	start := now()
	for s := 0; s < spec.Steps; s++ {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("run %s interrupted at step %d of %d: %w", spec.ID(), s, spec.Steps, err)
		}
		t0 := now()
		r, err := tr.Step(ctx)
		if err != nil {
			return res, fmt.Errorf("run %s: %w", spec.ID(), err)
		}
		stepTimes = append(stepTimes, since(t0).Seconds())
		if math.IsNaN(r.Loss) || math.IsInf(r.Loss, 0) {
			return res, fmt.Errorf("run %s: loss is %v at step %d; the learning rate is too high for this shape", spec.ID(), r.Loss, r.Step)
		}
		if s >= spec.Steps-tail {
			tailLoss += r.Loss / float64(tail)
		}
		if since(lastReport) > 10*time.Second {
			fmt.Fprintf(progress, "  step %d/%d  loss %.4f  %.1fs\n", r.Step, spec.Steps, r.Loss, since(start).Seconds())
			lastReport = now()
		}
	}
	res.WallS = since(start).Seconds()
	res.StepS = res.WallS / float64(spec.Steps)
	res.MedianStepS = median(stepTimes)
	res.TrainLoss = tailLoss

	// Score twice: with top-k routing, as trained (the paper's isoFLOP
	// loss), and with the learned causal decision, as when sampling, since
	// top-k routing looks at the whole sequence and so at the future.
	evalStart := now()
	rep, err := mod.EvaluateRouting(spec.Model, tr.Model().Params(), ds, 0, evalBatch)
	if err != nil {
		return res, fmt.Errorf("run %s: evaluate: %w", spec.ID(), err)
	}
	res.ValWindows = rep.Windows
	res.ValLoss, res.ValLossCausal = rep.ValLossTopK, rep.ValLossCausal
	res.CausalRouted = rep.RoutedFraction
	res.CausalForwardFLOPs = rep.ForwardFLOPsCausal
	res.DecisionPrecision, res.DecisionRecall, res.DecisionF1 = rep.DecisionPrecision, rep.DecisionRecall, rep.DecisionF1
	res.DecisionAccuracy, res.AccuracyFloor = rep.DecisionAccuracy, rep.AccuracyFloor
	if len(rep.RoutedLayers) > 0 {
		res.RoutedLayers = rep.RoutedLayers
		res.LayerPrecision, res.LayerRecall, res.LayerF1 = rep.LayerPrecision, rep.LayerRecall, rep.LayerF1
		res.LayerAccuracy, res.LayerRouted = rep.LayerAccuracy, rep.LayerRouted
	}
	res.EvalS = since(evalStart).Seconds()
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
