package train

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/shard"
)

// Collective is the ring all-reduce a trainer uses with more than one
// worker (*allreduce.Ring). A single-process trainer has none.
type Collective interface {
	ReduceScatter(ctx context.Context, step uint64, buf []float32) error
	AllGather(ctx context.Context, step uint64, buf []float32) error
	AllReduceScalars(ctx context.Context, step uint64, vals []float64) error
}

// TrainerConfig describes one rank's part of a data-parallel run.
type TrainerConfig struct {
	Model       mod.Config
	Optim       mod.OptimConfig
	GlobalBatch int    // sequences per step, over all ranks
	TotalSteps  int64  // for the learning-rate schedule
	Seed        uint64 // data order
	Rank, World int
	// Tokenizer names the data's vocabulary; checkpoints record it so
	// that sample and eval decode with it. "" means byte.
	Tokenizer string
	// Sync selects DiLoCo (diloco.go); nil or every-step syncs every step.
	Sync *jobspec.Sync
}

// EvalBatch is the batch of the evaluation model: validation windows run
// through it 16 at a time, whoever evaluates (train, a cluster's ranks,
// eval, local), so the same weights give the same loss bits.
const EvalBatch = 16

// Trainer runs training steps for one rank: forward and backward on its
// slice of the global batch, reduce-scatter of the gradient, AdamW on the
// rank's own range of the parameters, all-gather of the parameters. With
// World 1 it is the single-process trainer, with the same arithmetic.
type Trainer struct {
	cfg     TrainerConfig
	data    mod.Data
	model   *mod.Parallel[float32]
	eval    *mod.Parallel[float32] // built on first EvalLoss; shares model's params
	layout  shard.Layout
	opt     *shard.Optimizer
	coll    Collective
	lo, hi  int // this rank's samples of the global batch
	tokens  []int32
	targets []int32
	scalars []float64
	step    int64 // steps completed
	stop    atomic.Bool
	dl      *diloco // nil unless DiLoCo
}

// StepResult reports one step.
type StepResult struct {
	Step     int64   // 1-based number of the step just done
	Loss     float64 // global mean cross-entropy, nats per token
	Total    float64 // global mean objective, including the causal-decision loss
	GradNorm float64 // global gradient norm before clipping
	// SumSquares is GradNorm squared as the step computed it (the clip
	// scale's input, exactly): replaying the update elsewhere needs it.
	SumSquares float64
	LR         float64
	Tokens     int // tokens processed by all ranks
	// Stop is true when some rank asked to stop after this step (see
	// RequestStop). Every rank sees the same value at the same step. In
	// DiLoCo only outer steps carry it.
	Stop bool
	// Outer is true when the step ended with DiLoCo's outer step; Loss and
	// Total are then the workers' mean, and on inner steps this rank's own.
	Outer bool
}

// NewTrainer builds the model (fresh weights from cfg.Model.Seed) and this
// rank's optimizer state. coll may be nil only when World is 1.
func NewTrainer(cfg TrainerConfig, data mod.Data, coll Collective) (*Trainer, error) {
	if cfg.World < 1 || cfg.Rank < 0 || cfg.Rank >= cfg.World {
		return nil, fmt.Errorf("trainer: rank %d of world %d is invalid", cfg.Rank, cfg.World)
	}
	if cfg.World > 1 && coll == nil {
		return nil, fmt.Errorf("trainer: world %d needs a collective", cfg.World)
	}
	if cfg.GlobalBatch < cfg.World {
		return nil, fmt.Errorf("trainer: global batch %d is smaller than the %d workers; every worker needs at least one sequence", cfg.GlobalBatch, cfg.World)
	}
	cfg.Model = cfg.Model.WithDefaults()
	if err := data.CheckSeqLen(cfg.Model.SeqLen); err != nil {
		return nil, err
	}
	lo, hi := cfg.Rank*cfg.GlobalBatch/cfg.World, (cfg.Rank+1)*cfg.GlobalBatch/cfg.World
	model, err := mod.NewParallel[float32](cfg.Model, hi-lo, 0)
	if err != nil {
		return nil, err
	}
	layout, err := shard.NewLayout(model.Layout().Total, cfg.World)
	if err != nil {
		return nil, err
	}
	var dl *diloco
	var opt *shard.Optimizer
	if cfg.Sync.IsDiLoCo() {
		dl, opt, err = newDiLoCo(cfg, model.Layout(), layout, coll)
	} else {
		opt, err = shard.NewOptimizer(cfg.Optim, layout, cfg.Rank, model.Layout().DecaySpans())
	}
	if err != nil {
		model.Close()
		return nil, err
	}
	T := cfg.Model.SeqLen
	return &Trainer{
		cfg: cfg, data: data, model: model, layout: layout, opt: opt, coll: coll,
		lo: lo, hi: hi,
		tokens: make([]int32, (hi-lo)*T), targets: make([]int32, (hi-lo)*T),
		scalars: make([]float64, 4), dl: dl,
	}, nil
}

// Model is the trainer's model; its Params are the full current weights.
func (t *Trainer) Model() *mod.Parallel[float32] { return t.model }

// Close releases the model's worker goroutines.
func (t *Trainer) Close() {
	if t.eval != nil {
		t.eval.Close()
	}
	t.model.Close()
}

// EvalLoss is the validation loss of the current weights: the mean
// cross-entropy (nats per token) over validation windows [0, windows)
// (≤ 0: all), with top-k routing, as mod.EvalLoss computes it with a batch
// of EvalBatch. With more than one rank every rank must call it at the
// same step: each evaluates a contiguous share of the windows, and one
// scalar all-reduce adds the shares' sums and token counts, in rank order.
// With one rank the result is bit-identical to mod.EvalLoss; with several
// it differs only in how the per-window sums are grouped (a few ulps).
func (t *Trainer) EvalLoss(ctx context.Context, windows int) (float64, error) {
	T := t.cfg.Model.SeqLen
	windows, err := mod.EvalWindows(t.data, T, windows)
	if err != nil {
		return 0, err
	}
	if t.eval == nil {
		if t.eval, err = mod.NewParallelWithParams(t.cfg.Model, EvalBatch, 0, t.model.Params()); err != nil {
			return 0, err
		}
	}
	lo, hi := t.cfg.Rank*windows/t.cfg.World, (t.cfg.Rank+1)*windows/t.cfg.World
	sum, count, err := mod.EvalSum(t.eval, t.data, lo, hi)
	if err != nil {
		return 0, fmt.Errorf("step %d validation: %w", t.step, err)
	}
	if t.cfg.World > 1 {
		vals := []float64{sum, float64(count)}
		if err := t.coll.AllReduceScalars(ctx, uint64(t.step), vals); err != nil {
			return 0, fmt.Errorf("step %d validation all-reduce: %w", t.step, err)
		}
		sum, count = vals[0], int(vals[1])
	}
	return sum / float64(count), nil
}

// Optimizer is this rank's AdamW state (in DiLoCo the inner AdamW, over
// the whole vector).
func (t *Trainer) Optimizer() *shard.Optimizer { return t.opt }

// Layout is how the parameter vector is cut among ranks.
func (t *Trainer) Layout() shard.Layout { return t.layout }

// TokensPerStep is the tokens one step trains on, over all ranks.
func (t *Trainer) TokensPerStep() int { return t.cfg.GlobalBatch * t.cfg.Model.SeqLen }

// StepsDone is the number of completed steps.
func (t *Trainer) StepsDone() int64 { return t.step }

// SetStepsDone positions the trainer after a resume.
func (t *Trainer) SetStepsDone(s int64) { t.step = s }

// localGradients runs step s's forward and backward on this rank's part
// of the batch: the model's gradient buffer then holds the local
// gradients, and the local loss is returned.
func (t *Trainer) localGradients(s int64) (mod.Loss, error) {
	t.data.Batch(t.cfg.Seed, s, t.lo, t.hi, t.cfg.Model.SeqLen, t.tokens, t.targets)
	loss, err := t.model.Forward(t.tokens, t.targets)
	if err != nil {
		return mod.Loss{}, fmt.Errorf("step %d forward: %w", s+1, err)
	}
	if err := t.model.Backward(); err != nil {
		return mod.Loss{}, fmt.Errorf("step %d backward: %w", s+1, err)
	}
	return loss, nil
}

// Step runs one training step. A step whose global loss or gradient norm
// is not finite returns a *NonFiniteError and leaves the weights as they
// were; the run cannot usefully go on.
func (t *Trainer) Step(ctx context.Context) (StepResult, error) {
	if t.dl != nil {
		return t.stepDiLoCo(ctx)
	}
	s := t.step // 0-based index of this step
	loss, err := t.localGradients(s)
	if err != nil {
		return StepResult{}, err
	}
	grads, params := t.model.Grads(), t.model.Params()
	if err := t.reduceGradients(ctx, loss, grads, t.opt.Lo, t.opt.Hi); err != nil {
		return StepResult{}, err
	}
	lr, err := t.update(s, params, grads)
	if err != nil {
		return StepResult{}, err
	}
	if t.cfg.World > 1 {
		if err := t.coll.AllGather(ctx, uint64(s), params); err != nil {
			return StepResult{}, fmt.Errorf("step %d all-gather: %w", s+1, err)
		}
	}
	return t.finishSyncStep(lr), nil
}

// update applies step s's AdamW update to this rank's range of params,
// from the global gradient reduceGradients left in grads and t.scalars,
// and returns the learning rate it used.
func (t *Trainer) update(s int64, params, grads []float32) (float64, error) {
	lr := t.cfg.Optim.LRAt(int(s), int(t.cfg.TotalSteps))
	if err := t.opt.Update(params, grads, int(s)+1, lr, t.cfg.Optim.ClipScale(t.scalars[0])); err != nil {
		return 0, fmt.Errorf("step %d: %w", s+1, err)
	}
	return lr, nil
}

// finishSyncStep counts a synchronous step as done and reports it from
// the global scalars reduceGradients formed.
func (t *Trainer) finishSyncStep(lr float64) StepResult {
	t.step++
	return StepResult{
		Step: t.step, Loss: t.scalars[1], Total: t.scalars[2],
		GradNorm: math.Sqrt(t.scalars[0]), SumSquares: t.scalars[0], LR: lr, Tokens: t.TokensPerStep(),
		Stop: t.scalars[3] > 0,
	}
}

// reduceGradients is a synchronous step's exchange: it reduce-scatters
// this rank's gradient into the global mean (this rank then holds the
// mean of [lo, hi), its range of the layout), and all-reduces the global
// squared gradient norm, loss, objective and stop flag into t.scalars.
// A non-finite one is an error.
func (t *Trainer) reduceGradients(ctx context.Context, loss mod.Loss, grads []float32, lo, hi int) error {
	s := t.step
	// The model's loss is a mean over this rank's sequences; weighting by
	// their share of the global batch makes the ring's sum the global mean.
	share := float64(t.hi-t.lo) / float64(t.cfg.GlobalBatch)
	if t.cfg.World > 1 {
		w := float32(share)
		for i := range grads {
			grads[i] *= w
		}
		if err := t.coll.ReduceScatter(ctx, uint64(s), grads); err != nil {
			return fmt.Errorf("step %d reduce-scatter: %w", s+1, err)
		}
	}
	t.scalars[0] = mod.SumSquares(grads[lo:hi])
	t.scalars[1] = loss.CE * share
	t.scalars[2] = loss.Total * share
	// A stop request rides the scalar all-reduce, so every rank learns of
	// it at the same step and they stop together.
	t.scalars[3] = 0
	if t.stop.Load() {
		t.scalars[3] = 1
	}
	if t.cfg.World > 1 {
		if err := t.coll.AllReduceScalars(ctx, uint64(s), t.scalars); err != nil {
			return fmt.Errorf("step %d loss and norm all-reduce: %w", s+1, err)
		}
	}
	// A non-finite loss or gradient would poison every weight through the
	// update; stop before it, with the state still as the last step left it.
	return checkScalars(s+1, t.scalars[0], t.scalars[1], t.scalars[2])
}

// RequestStop asks every rank to stop after the next step. Safe to call
// from any goroutine.
func (t *Trainer) RequestStop() { t.stop.Store(true) }
