package jobspec

import "github.com/modcoord/modcoord/mod"

// Defaults for optional spec fields left at zero.
const (
	DefaultCheckpointEvery = 100
	DefaultKeepCheckpoints = 3
	DefaultEvalEvery       = 100
)

// Spec is what a user submits: a model, its data, and a fixed FLOP budget.
// Field names are the YAML/JSON format, so they are part of the API.
//
// Workers: each generation runs N workers, N the largest count with
// min_workers ≤ N ≤ min(live, max_workers) that divides batch, so that
// every worker gets exactly batch/N sequences. Each rank weights its mean
// gradient by its share of the global batch before the ring sums them
// (worker/trainer.go), so the sum is the global mean; equal shares keep
// every rank's work, memory and step time the same. Validation therefore
// requires batch divisible by min_workers (a generation can always form
// once min_workers are alive) and max_workers ≤ batch.
type Spec struct {
	Name string `json:"name"`
	// Data is the training text's path relative to each worker's data root
	// (see OpenData); it never names a file outside that root.
	Data  string          `json:"data"`
	Model mod.Config      `json:"model"`
	Optim mod.OptimConfig `json:"optim"`
	// Batch is the global batch: sequences per step, over all workers.
	Batch int `json:"batch"`
	// BudgetFLOPs is the job's fixed compute budget; it buys
	// floor(budget_flops / flops_per_step) steps.
	BudgetFLOPs     float64 `json:"budget_flops"`
	MinWorkers      int     `json:"min_workers"`
	MaxWorkers      int     `json:"max_workers"`
	CheckpointEvery int64   `json:"checkpoint_every"`
	KeepCheckpoints int     `json:"keep_checkpoints"`
	EvalEvery       int64   `json:"eval_every"`
	// Seed fixes data order; model.seed (weight init) defaults to it.
	Seed uint64 `json:"seed"`
}

// Plan is what a valid spec's budget buys.
type Plan struct {
	FLOPsPerStep float64 `json:"flops_per_step"`
	Steps        int64   `json:"steps"`
}

// WithDefaults fills optional fields left at zero.
func (s Spec) WithDefaults() Spec {
	s.Model = s.Model.WithDefaults()
	if s.Model.Seed == 0 {
		s.Model.Seed = s.Seed
	}
	if s.MinWorkers == 0 {
		s.MinWorkers = 1
	}
	if s.MaxWorkers == 0 {
		s.MaxWorkers = s.MinWorkers
	}
	if s.CheckpointEvery == 0 {
		s.CheckpointEvery = DefaultCheckpointEvery
	}
	if s.KeepCheckpoints == 0 {
		s.KeepCheckpoints = DefaultKeepCheckpoints
	}
	if s.EvalEvery == 0 {
		s.EvalEvery = DefaultEvalEvery
	}
	return s
}
