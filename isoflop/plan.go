package isoflop

import (
	"fmt"
	"math"

	"github.com/modcoord/modcoord/mod"
)

// RunSpec is one planned training run: a shape in a variant, trained for
// exactly the steps its budget buys.
type RunSpec struct {
	Budget       float64
	Variant      Variant
	Shape        Shape
	Seed         int // initialisation and data order
	Model        mod.Config
	Batch        int
	FLOPsPerStep float64
	Steps        int
}

// ID names the run uniquely within a sweep, for logs and tables.
func (r RunSpec) ID() string {
	return fmt.Sprintf("%.3g/%s/%s/seed%d", r.Budget, r.Variant.Name, r.Shape, r.Seed)
}

// fileName is the run's file in the sweep's runs/ directory.
func (r RunSpec) fileName() string {
	return fmt.Sprintf("%.3g_%s_%s_seed%d.json", r.Budget, r.Variant.Name, r.Shape, r.Seed)
}

// MaxSeeds bounds --seeds: each seed repeats the whole sweep.
const MaxSeeds = 100

// Plan lists every run of the sweep, budget by budget (smallest first, so
// that an interrupted sweep has whole budgets done), then seed 1..seeds (so
// that it has whole replicates done), then shape, then variant. A run whose single step costs more than its budget cannot be
// trained and is returned in skipped; a budget below one step of every
// model is an error, since it would train nothing.
func Plan(budgets []float64, shapes []Shape, variants []Variant, seeds, seqLen, batch int) (runs, skipped []RunSpec, err error) {
	if batch < 1 {
		return nil, nil, fmt.Errorf("--batch %d: need at least 1 sequence per step", batch)
	}
	if seeds < 1 || seeds > MaxSeeds {
		return nil, nil, fmt.Errorf("--seeds %d: use 1..%d", seeds, MaxSeeds)
	}
	if len(shapes) == 0 || len(variants) == 0 {
		return nil, nil, fmt.Errorf("isoflop plan: need at least one shape and one variant")
	}
	cheapest := math.Inf(1)
	for _, s := range shapes {
		for _, v := range variants {
			cfg := ModelConfig(s, v, seqLen, 1)
			if err := cfg.Validate(); err != nil {
				return nil, nil, fmt.Errorf("shape %s, %s, --seq-len %d: %w", s, v.Name, seqLen, err)
			}
			cheapest = min(cheapest, cfg.TrainFLOPs(batch).Total())
		}
	}
	for _, b := range budgets {
		if b < cheapest {
			return nil, nil, fmt.Errorf("--budgets: %.3g FLOPs is less than one training step of the cheapest model (%.3g FLOPs at --batch %d, --seq-len %d); raise the budget to at least %.3g", b, cheapest, batch, seqLen, cheapest)
		}
		for seed := 1; seed <= seeds; seed++ {
			for _, s := range shapes {
				for _, v := range variants {
					cfg := ModelConfig(s, v, seqLen, seed)
					r := RunSpec{Budget: b, Variant: v, Shape: s, Seed: seed, Model: cfg, Batch: batch, FLOPsPerStep: cfg.TrainFLOPs(batch).Total()}
					r.Steps = StepsFor(b, r.FLOPsPerStep)
					if r.Steps < 1 {
						skipped = append(skipped, r)
						continue
					}
					runs = append(runs, r)
				}
			}
		}
	}
	return runs, skipped, nil
}

// StepsFor is the number of whole steps a budget buys: floor(budget/perStep).
// The check after the division keeps a quotient that rounded up across an
// integer from buying a step the budget cannot pay for.
func StepsFor(budget, perStep float64) int {
	n := int(math.Floor(budget / perStep))
	if n > 0 && float64(n)*perStep > budget {
		n--
	}
	return n
}
