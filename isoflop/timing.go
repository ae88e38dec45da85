package isoflop

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// Timing says how the best runs of each budget are timed against each
// other after the sweep. A run's own wall-clock is measured minutes apart
// from its rivals', under whatever else the machine was doing then; the
// step-time ratios in the summary come instead from this phase, where the
// best model of every variant runs Steps steps in turn, Rounds times over,
// so that all of them see the same load.
type Timing struct {
	Rounds int // rounds of every model in turn; 0 skips the phase
	Steps  int // timed steps per model per round, after one untimed step
}

// DefaultTiming is 3 rounds of 10 steps.
func DefaultTiming() Timing { return Timing{Rounds: 3, Steps: 10} }

// TimeBest times the best run of every variant at each budget, interleaved
// (see Timing; opt.Timing says how long), and records each one's median step time in
// BudgetBest.TimedStepS. The models are freshly initialised: step time
// does not depend on the weights.
func TimeBest(ctx context.Context, ds *mod.Dataset, best []BudgetBest, opt Options) error {
	t := opt.Timing
	if t.Rounds < 1 || t.Steps < 1 {
		return nil
	}
	progress := opt.Progress
	if progress == nil {
		progress = io.Discard
	}
	for i := range best {
		if err := timeBudget(ctx, ds, &best[i], opt.Schedule, t, progress); err != nil {
			return err
		}
	}
	return nil
}

// timeBudget times the best runs of one budget and sets bb.TimedStepS.
func timeBudget(ctx context.Context, ds *mod.Dataset, bb *BudgetBest, sched Schedule, t Timing, progress io.Writer) error {
	variants := sortedKeys(bb.Best)
	trainers := make([]*train.Trainer, len(variants))
	defer closeAll(trainers)
	for j, v := range variants {
		r := bb.Best[v].Run
		// Rebuilt from what the run recorded, so that a runs.json from a
		// sweep with other variants is timed as it was trained.
		variant, err := ParseVariant(r.Variant)
		if err != nil {
			return fmt.Errorf("time budget %.3g: %w", bb.Budget, err)
		}
		cfg := ModelConfig(Shape{DModel: r.DModel, Layers: r.Layers, Heads: r.Heads}, variant, r.SeqLen, max(1, r.Seed))
		tr, err := train.NewTrainer(train.TrainerConfig{
			Model: cfg, Optim: sched.For(r.Steps), GlobalBatch: r.Batch,
			TotalSteps: int64(r.Steps), Seed: uint64(max(1, r.Seed)), Rank: 0, World: 1,
		}, ds, nil)
		if err != nil {
			return fmt.Errorf("time budget %.3g, %s: %w", bb.Budget, v, err)
		}
		trainers[j] = tr
		if _, err := tr.Step(ctx); err != nil { // warm-up: first-touch of buffers
			return fmt.Errorf("time budget %.3g, %s: %w", bb.Budget, v, err)
		}
	}
	samples := make([][]float64, len(variants))
	for range t.Rounds {
		for j, tr := range trainers {
			for range t.Steps {
				if err := ctx.Err(); err != nil {
					return fmt.Errorf("time budget %.3g: %w", bb.Budget, err)
				}
				t0 := time.Now()
				if _, err := tr.Step(ctx); err != nil {
					return fmt.Errorf("time budget %.3g, %s: %w", bb.Budget, variants[j], err)
				}
				samples[j] = append(samples[j], time.Since(t0).Seconds())
			}
		}
	}
	bb.TimedStepS = map[string]float64{}
	for j, v := range variants {
		bb.TimedStepS[v] = median(samples[j])
		fmt.Fprintf(progress, "timing %.3g %s %s: %.4f s/step (median of %d, interleaved)\n",
			bb.Budget, v, bb.Best[v].Shape, bb.TimedStepS[v], len(samples[j]))
	}
	return nil
}

func closeAll(trainers []*train.Trainer) {
	for _, tr := range trainers {
		if tr != nil {
			tr.Close()
		}
	}
}
