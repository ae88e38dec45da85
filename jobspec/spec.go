package jobspec

import "github.com/modcoord/modcoord/mod"

// Defaults for optional spec fields left at zero.
const (
	DefaultCheckpointEvery = 100
	DefaultKeepCheckpoints = 3
	DefaultEvalEvery       = 100
	// DefaultEvalWindows is `modcoord train --eval-windows`'s default: the
	// validation windows of a periodic estimate.
	DefaultEvalWindows = 64
	// DefaultTokenizer is the byte-level tokenizer, today's behaviour.
	DefaultTokenizer = "byte"
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
	// Data is, relative to each worker's data root (see OpenData; it never
	// names a file outside that root), either a text file, trained on as
	// bytes (90% train, 10% validation), or a directory of token shards
	// made by `modcoord prepare` (its manifest.json lists them and names
	// the tokenizer) or following llm.c's *train*.bin / *val*.bin naming.
	// Leave it empty when Shards lists the files.
	Data string `json:"data,omitempty"`
	// Shards lists token files explicitly instead of Data.
	Shards *Shards `json:"shards,omitempty"`
	// Tokenizer names the vocabulary the data is in: byte (the default) or
	// gpt2. A prepared corpus must have been made with it, and model.vocab
	// must cover it.
	Tokenizer string          `json:"tokenizer,omitempty"`
	Model     mod.Config      `json:"model"`
	Optim     mod.OptimConfig `json:"optim"`
	// Batch is the global batch: sequences per step, over all workers.
	Batch int `json:"batch"`
	// BudgetFLOPs is the job's fixed compute budget; it buys
	// floor(budget_flops / flops_per_step) steps.
	BudgetFLOPs     float64 `json:"budget_flops"`
	MinWorkers      int     `json:"min_workers"`
	MaxWorkers      int     `json:"max_workers"`
	CheckpointEvery int64   `json:"checkpoint_every"`
	KeepCheckpoints int     `json:"keep_checkpoints"`
	// EvalEvery is how often (in steps, and at the last step) the job's
	// validation loss is measured on validation windows [0, EvalWindows).
	EvalEvery   int64 `json:"eval_every"`
	EvalWindows int   `json:"eval_windows,omitempty"`
	// InitFrom starts the job from an existing checkpoint's weights.
	InitFrom *InitFrom `json:"init_from,omitempty"`
	// Seed fixes data order; model.seed (weight init) defaults to it.
	Seed uint64 `json:"seed"`
	// Sync is how workers synchronise; nil trains every step (see Sync).
	Sync *Sync `json:"sync,omitempty"`
}

// Shards are token files (llm.c or nanoGPT .bin), relative to the data
// root, each stream concatenated in the order given.
type Shards struct {
	Train []string `json:"train"`
	Val   []string `json:"val"`
	// Format is auto (the default: llm.c by its magic, else nanoGPT),
	// llmc or nanogpt.
	Format string `json:"format,omitempty"`
}

// InitFrom names a committed checkpoint to start from.
type InitFrom struct {
	// Checkpoint is relative to the workers' checkpoint directory: a job
	// id (its newest committed step that verifies) or a step directory
	// such as JOB/step-0000000600-gen-1.
	Checkpoint string `json:"checkpoint"`
	// Optimizer also loads the AdamW moments; otherwise they start at
	// zero. Either way the job counts its steps, its learning-rate
	// schedule and its budget from 0.
	Optimizer bool `json:"optimizer,omitempty"`
}

// ClusterOnlyFields are the spec fields only a cluster job uses; `modcoord
// train` ignores them.
var ClusterOnlyFields = []string{"name", "min_workers", "max_workers", "init_from"}

// Plan is what a valid spec's budget buys.
type Plan struct {
	FLOPsPerStep float64 `json:"flops_per_step"`
	Steps        int64   `json:"steps"`
	// OuterFLOPs is the cost of one DiLoCo outer step (0 when syncing
	// every step) and OuterSteps how many the job takes; the budget pays
	// Steps·FLOPsPerStep + OuterSteps·OuterFLOPs.
	OuterFLOPs float64 `json:"outer_flops,omitempty"`
	OuterSteps int64   `json:"outer_steps,omitempty"`
}

// TotalFLOPs is what the plan spends of the budget.
func (p Plan) TotalFLOPs() float64 {
	return float64(p.Steps)*p.FLOPsPerStep + float64(p.OuterSteps)*p.OuterFLOPs
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
	if s.EvalWindows == 0 {
		s.EvalWindows = DefaultEvalWindows
	}
	if s.Tokenizer == "" {
		s.Tokenizer = DefaultTokenizer
	}
	return s
}
