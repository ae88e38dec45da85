package coordinator

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/mod"
)

// Bounds on what a spec may ask for. They keep a hostile or mistaken spec
// from costing the coordinator memory or CPU; mod.Config.Validate bounds the
// model's shape.
const (
	// MaxSpecBytes is the largest spec document accepted, in bytes.
	MaxSpecBytes = 1 << 20
	// MaxBatch is the largest global batch, in sequences per step.
	MaxBatch = 1 << 20
	// MaxWorkers is the largest max_workers.
	MaxWorkers = 1024
	// MaxKeepCheckpoints is the largest keep_checkpoints.
	MaxKeepCheckpoints = 1000
	// MaxSteps is the most steps a budget may buy. Steps are int64 in the
	// ledger, and no real job runs a trillion steps.
	MaxSteps = 1_000_000_000_000
	// maxFLOPCountWork bounds batch × layers × heads: mod.Config.TrainFLOPs
	// loops that many times, and the coordinator runs it on every submission.
	maxFLOPCountWork = 1 << 26
)

// Defaults for optional spec fields left at zero.
const (
	DefaultCheckpointEvery = 100
	DefaultKeepCheckpoints = 3
	DefaultEvalEvery       = 100
)

// JobSpec is what a user submits: a model, its data, and a fixed FLOP
// budget. Field names are the YAML/JSON format, so they are part of the API.
//
// Workers: each generation runs N workers, N the largest count with
// min_workers ≤ N ≤ min(live, max_workers) that divides batch, so that every
// worker gets exactly batch/N sequences and the gradient average stays exact
// (the ring divides the summed gradient by N). Validation therefore requires
// batch divisible by min_workers (a generation can always form once
// min_workers are alive) and max_workers ≤ batch.
type JobSpec struct {
	Name string `json:"name"`
	// Data is the training text's path as the workers see it.
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

// ParseSpec decodes a YAML or JSON job spec, fills defaults and validates
// it. Unknown fields are refused. All problems are joined into one error,
// one line per field, each naming the field and the fix; the spec is
// returned as far as it could be decoded.
func ParseSpec(data []byte) (JobSpec, error) {
	if len(data) > MaxSpecBytes {
		return JobSpec{}, fmt.Errorf("spec: %d bytes is more than the %d allowed", len(data), MaxSpecBytes)
	}
	// Strict YAML refuses duplicate keys; decoding into a map first lets us
	// name every unknown field, at every level, instead of only the first.
	var raw map[string]any
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return JobSpec{}, fmt.Errorf("spec: not a YAML or JSON object: %w", err)
	}
	if raw == nil {
		return JobSpec{}, errors.New("spec: empty; see docs for the fields a job needs (name, data, model, batch, budget_flops)")
	}
	errs := unknownFields(raw)

	// Omitted optimizer fields keep DefaultOptim's values, while a field set
	// explicitly to 0 (clip_norm: 0 disables clipping) stays 0.
	spec := JobSpec{Optim: mod.DefaultOptim()}
	if err := yaml.Unmarshal(data, &spec); err != nil {
		errs = append(errs, fmt.Errorf("spec: %w", err))
		return spec, errors.Join(errs...)
	}
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		errs = append(errs, err)
	}
	return spec, errors.Join(errs...)
}

// WithDefaults fills optional fields left at zero.
func (s JobSpec) WithDefaults() JobSpec {
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

// Validate checks every field and joins all errors.
func (s JobSpec) Validate() error {
	_, err := s.Plan()
	return err
}

var jobNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Plan validates the spec and computes what its budget buys: the exact
// FLOPs of one training step and floor(budget_flops / flops_per_step) steps.
func (s JobSpec) Plan() (Plan, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !jobNamePattern.MatchString(s.Name) {
		bad("name", "%q is not a job name; use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", truncate(s.Name, 80))
	}
	switch {
	case s.Data == "":
		bad("data", "required; give the training text's path as the workers see it")
	case len(s.Data) > 4096 || strings.ContainsRune(s.Data, 0):
		bad("data", "not a usable path (over 4096 bytes or contains NUL)")
	}
	modelErr := s.Model.Validate()
	if modelErr != nil {
		errs = append(errs, modelErr)
	}
	errs = append(errs, validateOptim(s.Optim)...)

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
		}
		if s.MaxWorkers > s.Batch {
			bad("max_workers", "%d exceeds batch %d; each worker needs at least one sequence, so use at most %d", s.MaxWorkers, s.Batch, s.Batch)
		}
	}
	if s.CheckpointEvery < 1 {
		bad("checkpoint_every", "%d must be at least 1 step (omit it for %d)", s.CheckpointEvery, DefaultCheckpointEvery)
	}
	if s.KeepCheckpoints < 1 || s.KeepCheckpoints > MaxKeepCheckpoints {
		bad("keep_checkpoints", "%d is out of range; use 1..%d (omit it for %d)", s.KeepCheckpoints, MaxKeepCheckpoints, DefaultKeepCheckpoints)
	}
	if s.EvalEvery < 1 {
		bad("eval_every", "%d must be at least 1 step (omit it for %d)", s.EvalEvery, DefaultEvalEvery)
	}
	budgetOK := s.BudgetFLOPs > 0 && !math.IsInf(s.BudgetFLOPs, 1)
	if !budgetOK {
		bad("budget_flops", "%v must be a positive, finite number of FLOPs, e.g. 1e15", s.BudgetFLOPs)
	}

	var plan Plan
	if modelErr == nil && batchOK {
		if work := int64(s.Batch) * int64(s.Model.Layers) * int64(s.Model.Heads); work > maxFLOPCountWork {
			bad("batch", "batch %d × layers %d × heads %d = %d is more than the %d this coordinator evaluates; lower batch", s.Batch, s.Model.Layers, s.Model.Heads, work, maxFLOPCountWork)
		} else {
			plan.FLOPsPerStep = s.Model.TrainFLOPs(s.Batch).Total()
		}
	}
	if plan.FLOPsPerStep > 0 && budgetOK {
		steps := math.Floor(s.BudgetFLOPs / plan.FLOPsPerStep)
		switch {
		case steps < 1:
			bad("budget_flops", "%g is smaller than one step: one step of batch %d costs %g FLOPs; raise budget_flops to at least %g", s.BudgetFLOPs, s.Batch, plan.FLOPsPerStep, plan.FLOPsPerStep)
		case steps > MaxSteps:
			bad("budget_flops", "%g buys %g steps of %g FLOPs, more than the %d allowed; lower budget_flops", s.BudgetFLOPs, steps, plan.FLOPsPerStep, int64(MaxSteps))
		default:
			plan.Steps = int64(steps)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Plan{}, err
	}
	return plan, nil
}

func validateOptim(o mod.OptimConfig) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("optim.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	if !(o.LR > 0) || !finite(o.LR) {
		bad("lr", "%v must be a positive number, e.g. %g", o.LR, mod.DefaultOptim().LR)
	}
	if !(o.MinLR >= 0) || !finite(o.MinLR) || o.MinLR > o.LR {
		bad("min_lr", "%v must be between 0 and lr (%v)", o.MinLR, o.LR)
	}
	if o.WarmupSteps < 0 {
		bad("warmup_steps", "%d must be >= 0", o.WarmupSteps)
	}
	if !(o.Beta1 >= 0 && o.Beta1 < 1) {
		bad("beta1", "%v is outside [0, 1); 0.9 is usual", o.Beta1)
	}
	if !(o.Beta2 >= 0 && o.Beta2 < 1) {
		bad("beta2", "%v is outside [0, 1); 0.99 is usual", o.Beta2)
	}
	if !(o.Eps > 0) || !finite(o.Eps) {
		bad("eps", "%v must be > 0, e.g. 1e-8", o.Eps)
	}
	if !(o.WeightDecay >= 0) || !finite(o.WeightDecay) {
		bad("weight_decay", "%v must be >= 0", o.WeightDecay)
	}
	if !(o.ClipNorm >= 0) || !finite(o.ClipNorm) {
		bad("clip_norm", "%v must be >= 0 (0 disables clipping)", o.ClipNorm)
	}
	return errs
}

// CheckData reports whether the spec's data file exists on this machine.
// The coordinator and `submit` run it where they are; it is only a guard
// against typos, since the workers are the ones that read the file.
func (s JobSpec) CheckData() error {
	if _, err := os.Stat(s.Data); err != nil {
		return fmt.Errorf("data: cannot use %q: %w (the path must exist where it is checked: on the submitting machine unless `submit --skip-data-check`, on the coordinator unless it runs with --skip-data-check)", s.Data, err)
	}
	return nil
}

// unknownFields names every key in a decoded spec that JobSpec, mod.Config
// or mod.OptimConfig does not have, with the fields that do exist.
func unknownFields(raw map[string]any) []error {
	var errs []error
	check := func(prefix string, m map[string]any, t reflect.Type) {
		known := jsonFieldNames(t)
		for _, k := range sortedKeys(m) {
			if !known[k] {
				errs = append(errs, fmt.Errorf("%s%s: unknown field; known fields are %s", prefix, truncate(k, 80), strings.Join(sortedKeys(known), ", ")))
			}
		}
	}
	check("", raw, reflect.TypeFor[JobSpec]())
	if m, ok := raw["model"].(map[string]any); ok {
		check("model.", m, reflect.TypeFor[mod.Config]())
	}
	if m, ok := raw["optim"].(map[string]any); ok {
		check("optim.", m, reflect.TypeFor[mod.OptimConfig]())
	}
	return errs
}

func jsonFieldNames(t reflect.Type) map[string]bool {
	names := map[string]bool{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names[name] = true
		}
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// FieldErrors flattens a joined validation error into one message per
// field, for the API's 400 response and the CLI.
func FieldErrors(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, FieldErrors(e)...)
		}
		return out
	}
	return []string{err.Error()}
}
