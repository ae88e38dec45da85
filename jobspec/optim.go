package jobspec

import (
	"errors"
	"fmt"
	"math"

	"github.com/modcoord/modcoord/mod"
)

// Ranges of the optimizer's hyperparameters. They are wide enough for any
// real run and narrow enough that a typo (lr: 1e308, a NaN) is refused
// before it costs a cluster a job that diverges on its first step.
const (
	MaxLR          = 10
	MaxEps         = 1
	MaxWeightDecay = 10
	MaxClipNorm    = 1e6
	MaxWarmupSteps = 1_000_000_000
)

// ValidateOptim checks AdamW's hyperparameters and joins all errors, each
// naming the field (optim.*), the value, the range and the fix. Non-finite
// values are always refused. `modcoord train` can use it as submit does.
func ValidateOptim(o mod.OptimConfig) error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("optim.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	def := mod.DefaultOptim()
	lrOK := inRange(o.LR, 0, MaxLR, false, true)
	if !lrOK {
		bad("lr", "%v is outside (0, %g]; use a small positive rate, e.g. %g", o.LR, float64(MaxLR), def.LR)
	}
	if lrOK && !inRange(o.MinLR, 0, o.LR, true, true) {
		bad("min_lr", "%v is outside [0, lr = %v]; the schedule decays from lr down to min_lr, e.g. %g", o.MinLR, o.LR, def.MinLR)
	} else if !lrOK && !inRange(o.MinLR, 0, MaxLR, true, true) {
		bad("min_lr", "%v is outside [0, lr]; e.g. %g", o.MinLR, def.MinLR)
	}
	if o.WarmupSteps < 0 || o.WarmupSteps > MaxWarmupSteps {
		bad("warmup_steps", "%d is outside [0, %d]; e.g. %d", o.WarmupSteps, MaxWarmupSteps, def.WarmupSteps)
	}
	if !inRange(o.Beta1, 0, 1, true, false) {
		bad("beta1", "%v is outside [0, 1); %g is usual", o.Beta1, def.Beta1)
	}
	if !inRange(o.Beta2, 0, 1, true, false) {
		bad("beta2", "%v is outside [0, 1); %g is usual", o.Beta2, def.Beta2)
	}
	if !inRange(o.Eps, 0, MaxEps, false, true) {
		bad("eps", "%v is outside (0, %g]; e.g. %g", o.Eps, float64(MaxEps), def.Eps)
	}
	wdOK := inRange(o.WeightDecay, 0, MaxWeightDecay, true, true)
	if !wdOK {
		bad("weight_decay", "%v is outside [0, %g]; e.g. %g (0 disables it)", o.WeightDecay, float64(MaxWeightDecay), def.WeightDecay)
	}
	// AdamW multiplies decayed weights by 1 - lr·weight_decay every step;
	// at or past 1 that flips or zeroes every weight.
	if lrOK && wdOK && o.LR*o.WeightDecay >= 1 {
		bad("weight_decay", "%v × lr %v = %v must be below 1 (AdamW scales weights by 1 - lr·weight_decay each step); lower weight_decay or lr", o.WeightDecay, o.LR, o.LR*o.WeightDecay)
	}
	if !inRange(o.ClipNorm, 0, MaxClipNorm, true, true) {
		bad("clip_norm", "%v is outside [0, %g]; e.g. %g (0 disables clipping)", o.ClipNorm, float64(MaxClipNorm), def.ClipNorm)
	}
	return errors.Join(errs...)
}

// inRange reports whether x is finite and within [lo, hi], each end open
// or closed as asked. NaN fails every comparison, so it is never in range.
func inRange(x, lo, hi float64, loClosed, hiClosed bool) bool {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return false
	}
	aboveLo := x > lo || (loClosed && x == lo)
	belowHi := x < hi || (hiClosed && x == hi)
	return aboveLo && belowHi
}
