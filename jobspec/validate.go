package jobspec

import (
	"errors"
	"fmt"
	"math"
	"regexp"
)

var jobNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate checks every field under limits (the zero Limits means the
// defaults) and joins all errors. It reads no file: the data path is
// checked only for its form, since only a worker has the data root.
func (s Spec) Validate(limits Limits) error {
	_, err := s.Plan(limits)
	return err
}

// Plan validates the spec under limits and computes what its budget buys:
// the exact FLOPs of one training step and floor(budget_flops /
// flops_per_step) steps.
func (s Spec) Plan(limits Limits) (Plan, error) {
	limits = limits.WithDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !jobNamePattern.MatchString(s.Name) {
		bad("name", "%q is not a job name; use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", truncate(s.Name, 80))
	}
	errs = append(errs, s.checkData()...)
	modelErr := s.Model.Validate()
	if modelErr != nil {
		errs = append(errs, modelErr)
	} else if err := s.checkTokenizer(); err != nil {
		errs = append(errs, err)
	}
	if err := ValidateOptim(s.Optim); err != nil {
		errs = append(errs, err)
	}

	batchOK := s.Batch >= 1 && s.Batch <= MaxBatch
	if !batchOK {
		bad("batch", "%d is out of range; use 1..%d sequences per step (global, split over workers)", s.Batch, MaxBatch)
	}
	workersOK := true
	switch {
	case s.MinWorkers < 1 || s.MinWorkers > MaxWorkers:
		bad("min_workers", "%d is out of range; use 1..%d", s.MinWorkers, MaxWorkers)
		workersOK = false
	case s.MaxWorkers < s.MinWorkers || s.MaxWorkers > MaxWorkers:
		bad("max_workers", "%d must be between min_workers (%d) and %d", s.MaxWorkers, s.MinWorkers, MaxWorkers)
		workersOK = false
	}
	if batchOK && workersOK {
		if s.Batch%s.MinWorkers != 0 {
			bad("batch", "%d is not divisible by min_workers %d; each worker gets batch/N sequences, so use a multiple of %d", s.Batch, s.MinWorkers, s.MinWorkers)
			workersOK = false
		}
		if s.MaxWorkers > s.Batch {
			bad("max_workers", "%d exceeds batch %d; each worker needs at least one sequence, so use at most %d", s.MaxWorkers, s.Batch, s.Batch)
		}
	}
	if s.CheckpointEvery < 1 || s.CheckpointEvery > MaxSteps {
		bad("checkpoint_every", "%d is out of range; use 1..%d steps (omit it for %d)", s.CheckpointEvery, int64(MaxSteps), DefaultCheckpointEvery)
	}
	if s.KeepCheckpoints < 1 || s.KeepCheckpoints > MaxKeepCheckpoints {
		bad("keep_checkpoints", "%d is out of range; use 1..%d (omit it for %d)", s.KeepCheckpoints, MaxKeepCheckpoints, DefaultKeepCheckpoints)
	}
	if s.EvalEvery < 1 || s.EvalEvery > MaxSteps {
		bad("eval_every", "%d is out of range; use 1..%d steps (omit it for %d)", s.EvalEvery, int64(MaxSteps), DefaultEvalEvery)
	}
	if s.EvalWindows < 1 || s.EvalWindows > MaxEvalWindows {
		bad("eval_windows", "%d is out of range; use 1..%d validation windows (omit it for %d)", s.EvalWindows, MaxEvalWindows, DefaultEvalWindows)
	}
	if s.InitFrom != nil {
		if err := checkRelPath("init_from.checkpoint", s.InitFrom.Checkpoint, "the workers' checkpoint directory", "a finished job's id"); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.Sync.validate(s.CheckpointEvery, s.EvalEvery)...)
	budgetOK := s.BudgetFLOPs > 0 && !math.IsInf(s.BudgetFLOPs, 1)
	if !budgetOK {
		bad("budget_flops", "%v must be a positive, finite number of FLOPs, e.g. 1e15", s.BudgetFLOPs)
	}

	// The memory estimate needs a valid shape and a valid split: at
	// min_workers each worker holds the most (the largest share of the
	// batch and the largest optimizer shard).
	if modelErr == nil && batchOK && workersOK {
		if err := checkWorkerMemory(s, limits); err != nil {
			errs = append(errs, err)
		}
	}

	var plan Plan
	if modelErr == nil && batchOK {
		if work := int64(s.Batch) * int64(s.Model.Layers) * int64(s.Model.Heads); work > maxFLOPCountWork {
			bad("batch", "batch %d × layers %d × heads %d = %d is more than the %d this coordinator evaluates; lower batch", s.Batch, s.Model.Layers, s.Model.Heads, work, maxFLOPCountWork)
		} else {
			plan.FLOPsPerStep = s.Model.TrainFLOPs(s.Batch).Total()
			plan.OuterFLOPs = s.Sync.OuterFLOPsPerParam() * paramCount(s.Model)
		}
	}
	if plan.FLOPsPerStep > 0 && budgetOK {
		steps := math.Floor(s.BudgetFLOPs / plan.FLOPsPerStep)
		if s.Sync.IsDiLoCo() && s.Sync.InnerSteps >= 1 {
			steps = s.Sync.diLoCoSteps(s.BudgetFLOPs, plan.FLOPsPerStep, plan.OuterFLOPs)
		}
		switch {
		case steps < 1:
			bad("budget_flops", "%g is smaller than one step: one step of batch %d costs %g FLOPs; raise budget_flops to at least %g", s.BudgetFLOPs, s.Batch, plan.FLOPsPerStep, plan.FLOPsPerStep)
		case steps > MaxSteps:
			bad("budget_flops", "%g buys %g steps of %g FLOPs, more than the %d allowed; lower budget_flops", s.BudgetFLOPs, steps, plan.FLOPsPerStep, int64(MaxSteps))
		default:
			plan.Steps = int64(steps)
			plan.OuterSteps = s.Sync.OuterRounds(plan.Steps)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Plan{}, err
	}
	return plan, nil
}

// checkWorkerMemory refuses a spec whose per-worker estimate at
// min_workers exceeds the limit, naming both and the usual fixes.
func checkWorkerMemory(s Spec, limits Limits) error {
	est := EstimateWorkerMemory(s, s.MinWorkers, limits.WorkerCores)
	if est.Total() <= float64(limits.WorkerMemoryBytes) {
		return nil
	}
	return fmt.Errorf("model: needs an estimated %s per worker at min_workers %d (%s), more than the %s limit; lower batch, d_model, vocab, seq_len or layers, or raise min_workers",
		formatBytes(est.Total()), s.MinWorkers, est, formatBytes(float64(limits.WorkerMemoryBytes)))
}
