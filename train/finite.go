package train

import (
	"fmt"
	"math"
)

// NonFiniteError is a training step whose global loss or gradient norm is
// NaN or infinite, or a state about to be checkpointed that holds such a
// number: the run diverged, and neither retrying the step nor resuming
// from a checkpoint taken after it can help. Workers fail the job with it.
type NonFiniteError struct {
	Step int64 // 1-based number of the step
	// What is the quantity that is not finite ("loss", "gradient norm",
	// "parameters") and Value one offending value.
	What  string
	Value float64
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("step %d: %s is %v, training diverged; lower optim.lr or set optim.clip_norm (e.g. 1.0)", e.Step, e.What, e.Value)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// checkScalars refuses a step whose all-reduced squared gradient norm,
// loss or objective is not finite; every rank holds the same values, so
// every rank refuses the same step.
func checkScalars(step int64, sumSquares, loss, total float64) error {
	switch {
	case !finite(loss):
		return &NonFiniteError{Step: step, What: "loss", Value: loss}
	case !finite(total):
		return &NonFiniteError{Step: step, What: "objective (loss with the router's causal-decision loss)", Value: total}
	case !finite(sumSquares):
		return &NonFiniteError{Step: step, What: "gradient norm", Value: math.Sqrt(sumSquares)}
	}
	return nil
}

// CheckFinite reports a *NonFiniteError if this rank's shard of the state
// (its parameters and AdamW moments) holds a NaN or an infinity. A
// checkpoint of such a state would resume a diverged run, so none is
// written. It costs one pass over the shard, next to writing it.
func (t *Trainer) CheckFinite() error {
	st := t.ShardState()
	for _, part := range []struct {
		what string
		v    []float32
	}{{"a parameter", st.Params}, {"an AdamW first moment", st.AdamM}, {"an AdamW second moment", st.AdamV}} {
		for _, x := range part.v {
			if f := float64(x); !finite(f) {
				return &NonFiniteError{Step: t.step, What: part.what, Value: f}
			}
		}
	}
	return nil
}
