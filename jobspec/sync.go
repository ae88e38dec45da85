package jobspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
)

// Synchronisation modes (sync.mode).
const (
	// SyncEveryStep all-reduces the gradient on every step: today's
	// data-parallel training, and the default.
	SyncEveryStep = "every-step"
	// SyncDiLoCo lets each worker take inner_steps AdamW steps alone on its
	// own share of the batch, then all-reduces the change in the parameters
	// (the outer gradient) and applies an outer Nesterov step (Douillard et
	// al. 2023, arXiv 2311.08105).
	SyncDiLoCo = "diloco"
)

// Outer-gradient encodings on the bus (sync.compress).
const (
	CompressNone = "none" // float32
	CompressInt8 = "int8" // int8 with one float32 scale per ring chunk
)

// DiLoCo defaults, the paper's: outer SGD with Nesterov momentum 0.9 at
// learning rate 0.7.
const (
	DefaultOuterLR       = 0.7
	DefaultOuterMomentum = 0.9
	DefaultInnerSteps    = 100
	// MaxInnerSteps bounds sync.inner_steps; the paper's longest round is
	// 2000 steps.
	MaxInnerSteps = 1_000_000
	// MaxOuterLR bounds sync.outer_lr; past about 2 an outer step
	// overshoots the workers' average by more than it moved.
	MaxOuterLR = 10
)

// Sync is how workers synchronise (the spec's `sync:`). In YAML it is
// either the string `every-step` or an object:
//
//	sync: {mode: diloco, inner_steps: 100, outer_lr: 0.7, outer_momentum: 0.9, nesterov: true, compress: int8}
//
// Omitted DiLoCo fields take the defaults above; an explicit 0
// (outer_momentum: 0) stays 0. A spec without sync trains every step.
type Sync struct {
	Mode          string  `json:"mode"`
	InnerSteps    int64   `json:"inner_steps,omitempty"`
	OuterLR       float64 `json:"outer_lr,omitempty"`
	OuterMomentum float64 `json:"outer_momentum"`
	Nesterov      bool    `json:"nesterov"`
	Compress      string  `json:"compress,omitempty"`
	// WarmupSteps is how many steps at the start of the job sync every
	// step before the rounds begin (0: none), so that DiLoCo starts from
	// a synchronously trained model as the paper starts from a pretrained
	// one. A multiple of InnerSteps, so that rounds, checkpoints and
	// evaluations keep their boundaries.
	WarmupSteps int64 `json:"warmup_steps,omitempty"`
}

// DefaultDiLoCo is a DiLoCo setting with the paper's outer optimizer.
func DefaultDiLoCo(innerSteps int64) Sync {
	return Sync{Mode: SyncDiLoCo, InnerSteps: innerSteps, OuterLR: DefaultOuterLR,
		OuterMomentum: DefaultOuterMomentum, Nesterov: true, Compress: CompressNone}
}

// UnmarshalJSON accepts the string form (a mode alone) and the object
// form, refusing unknown fields. Fields left out of an object keep their
// defaults.
func (s *Sync) UnmarshalJSON(b []byte) error {
	var mode string
	if err := json.Unmarshal(b, &mode); err == nil {
		*s = Sync{Mode: mode}
		if mode == SyncDiLoCo {
			*s = DefaultDiLoCo(DefaultInnerSteps)
		}
		return nil
	}
	// The defaults only apply to a diloco object; an every-step object
	// with DiLoCo fields is refused by Validate.
	var probe struct {
		Mode string `json:"mode"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return fmt.Errorf("sync: want %q or an object such as {mode: diloco, inner_steps: 100}: %w", SyncEveryStep, err)
	}
	type plain Sync // no UnmarshalJSON: no recursion
	v := plain{Mode: probe.Mode}
	if probe.Mode == SyncDiLoCo {
		v = plain(DefaultDiLoCo(DefaultInnerSteps))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	*s = Sync(v)
	return nil
}

// ModeName is the mode, every-step for a zero Sync.
func (s *Sync) ModeName() string {
	if s == nil || s.Mode == "" {
		return SyncEveryStep
	}
	return s.Mode
}

// IsDiLoCo reports whether s selects DiLoCo.
func (s *Sync) IsDiLoCo() bool { return s != nil && s.Mode == SyncDiLoCo }

// Int8 reports whether outer gradients travel as int8.
func (s *Sync) Int8() bool { return s.IsDiLoCo() && s.Compress == CompressInt8 }

// OuterRounds is the number of outer steps in the first steps steps of a
// job: none during the warm-up, then one after every inner_steps steps,
// and one after the last step if it ends a short round (the job always
// ends on global parameters). 0 unless DiLoCo.
func (s *Sync) OuterRounds(steps int64) int64 {
	if !s.IsDiLoCo() || s.InnerSteps < 1 || steps <= s.WarmupSteps {
		return 0
	}
	return (steps - s.WarmupSteps + s.InnerSteps - 1) / s.InnerSteps
}

// InWarmup reports whether step (0-based) syncs every step: it comes
// before the end of sync.warmup_steps.
func (s *Sync) InWarmup(step int64) bool { return s.IsDiLoCo() && step < s.WarmupSteps }

// IsOuterStep reports whether step (1-based) ends with an outer step when
// the job runs total steps.
func (s *Sync) IsOuterStep(step, total int64) bool {
	return s.IsDiLoCo() && s.InnerSteps >= 1 && step > s.WarmupSteps &&
		((step-s.WarmupSteps)%s.InnerSteps == 0 || step == total)
}

// OuterFLOPsPerParam is the arithmetic of one outer step per parameter,
// done once per parameter across the cluster (each rank updates its own
// range): averaging the summed outer gradient (1), the momentum update
// m = μm + g (2), and the step θ -= lr·(g + μm) with Nesterov (4) or
// θ -= lr·m without (2). Like the FLOPs of a synchronous step, which count
// the model's matrix products and neither the ring's additions nor AdamW,
// it leaves out the ring's sums and the per-worker differences.
func (s *Sync) OuterFLOPsPerParam() float64 {
	if !s.IsDiLoCo() {
		return 0
	}
	if s.Nesterov {
		return 7
	}
	return 5
}

// validate checks the sync fields against the rest of the spec and
// returns one error per problem, each naming the field and the fix.
func (s *Sync) validate(checkpointEvery, evalEvery int64) []error {
	if s == nil {
		return nil
	}
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("sync.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch s.Mode {
	case SyncEveryStep, "":
		if s.InnerSteps != 0 || s.OuterLR != 0 || s.OuterMomentum != 0 || s.Nesterov || s.Compress != "" || s.WarmupSteps != 0 {
			bad("mode", "%s takes no other sync fields; set mode: %s to use inner_steps, outer_lr, outer_momentum, nesterov, compress or warmup_steps", SyncEveryStep, SyncDiLoCo)
		}
		return errs
	case SyncDiLoCo:
	default:
		bad("mode", "%q is not a sync mode; use %s (the default) or %s", truncate(s.Mode, 40), SyncEveryStep, SyncDiLoCo)
		return errs
	}
	innerOK := s.InnerSteps >= 1 && s.InnerSteps <= MaxInnerSteps
	if !innerOK {
		bad("inner_steps", "%d is out of range; use 1..%d local steps between outer steps (DiLoCo uses 100-500)", s.InnerSteps, MaxInnerSteps)
	}
	if !inRange(s.OuterLR, 0, MaxOuterLR, false, true) {
		bad("outer_lr", "%v is outside (0, %g]; the paper uses %g", s.OuterLR, float64(MaxOuterLR), DefaultOuterLR)
	}
	if !inRange(s.OuterMomentum, 0, 1, true, false) {
		bad("outer_momentum", "%v is outside [0, 1); the paper uses %g", s.OuterMomentum, DefaultOuterMomentum)
	}
	switch s.Compress {
	case CompressNone, CompressInt8:
	default:
		bad("compress", "%q is not an encoding; use %s (float32) or %s", truncate(s.Compress, 40), CompressNone, CompressInt8)
	}
	switch {
	case s.WarmupSteps < 0 || s.WarmupSteps > MaxSteps:
		bad("warmup_steps", "%d is out of range; use 0..%d steps that sync every step before the first round", s.WarmupSteps, int64(MaxSteps))
	case innerOK && s.WarmupSteps%s.InnerSteps != 0:
		// Rounds then end on multiples of inner_steps, where checkpoints
		// and evaluations are allowed.
		bad("warmup_steps", "%d is not a multiple of sync.inner_steps %d; use %d", s.WarmupSteps, s.InnerSteps, roundUp(s.WarmupSteps, s.InnerSteps))
	}
	// Checkpoints and evaluations happen on global parameters only: mid-round
	// every worker holds different local ones.
	if innerOK && checkpointEvery > 0 && checkpointEvery%s.InnerSteps != 0 {
		errs = append(errs, fmt.Errorf("checkpoint_every: %d is not a multiple of sync.inner_steps %d; DiLoCo checkpoints only at outer steps, so use %d", checkpointEvery, s.InnerSteps, roundUp(checkpointEvery, s.InnerSteps)))
	}
	if innerOK && evalEvery > 0 && evalEvery%s.InnerSteps != 0 {
		errs = append(errs, fmt.Errorf("eval_every: %d is not a multiple of sync.inner_steps %d; DiLoCo evaluates only the global parameters after an outer step, so use %d", evalEvery, s.InnerSteps, roundUp(evalEvery, s.InnerSteps)))
	}
	return errs
}

func roundUp(v, m int64) int64 { return (v + m - 1) / m * m }

// diLoCoSteps is what budget buys in DiLoCo: the largest number of steps
// s with s·perStep + OuterRounds(s)·outer ≤ budget. It starts from the
// continuous solution and corrects by whole steps, so float rounding
// never buys a step the budget cannot pay for.
func (s *Sync) diLoCoSteps(budget, perStep, outer float64) float64 {
	cost := func(n float64) float64 { return n*perStep + float64(s.OuterRounds(int64(n)))*outer }
	n := math.Floor(budget / (perStep + outer/float64(s.InnerSteps)))
	if n > MaxSteps { // the caller refuses it; no loop over a huge count
		return n
	}
	for n > 0 && cost(n) > budget {
		n--
	}
	for cost(n+1) <= budget {
		n++
	}
	return n
}
