package train

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/shard"
)

// DiLoCo (sync.mode diloco, Douillard et al. 2023).
//
// Each rank takes inner_steps AdamW steps alone, on the same share of
// each step's global batch it would get when syncing every step (the
// batch is a pure function of (seed, step) and the rank's share of
// (rank, world), so a rank's stream is a pure function of (seed, step,
// rank, world)). Inner steps send nothing. After the last inner step of a
// round (and after the job's last step) comes the outer step:
//
//  1. one scalar all-reduce: the workers' mean loss and the stop flag;
//  2. a reduce-scatter of the outer gradient: in float32 the ring sums the
//     local parameters and the owner forms θ_global − mean(θ_local) in
//     float64 (the same vector and the same bytes as summing differences,
//     but exact with one worker, where a float32 difference of two
//     parameters of different sign or scale would round); with int8 the
//     ring sums the differences θ_global − θ_local themselves, small
//     numbers that quantize well;
//  3. each rank applies the outer Nesterov step to the range it owns
//     (shard.OuterOptimizer, momentum sharded like AdamW's state);
//  4. an all-gather of the new global parameters, in float32, so every
//     rank starts the next round from the same bits.
//
// The inner AdamW state covers the whole vector on every rank (inner
// steps are local, so nobody else updates a rank's other ranges): 2·P
// floats instead of 2·P/N, plus the round's starting parameters (P), the
// ring buffer (P) and the outer momentum (P/N) — jobspec's memory
// estimate counts them. Its bias correction counts the job's steps, so
// with one worker, outer lr 1 and momentum 0 DiLoCo is plain training, bit
// for bit (TestDiLoCoOneWorkerEqualsPlainTraining).
type diloco struct {
	sync   jobspec.Sync
	outer  *shard.OuterOptimizer
	global []float32 // the global parameters of the round's start
	buf    []float32 // what the ring reduces
	zeros  []float32 // the checkpoint's unused second-moment slot
	stats  OuterStats
	// innerRestored: the last Restore found this rank's inner state.
	innerRestored bool
}

// OuterStats sums what DiLoCo's outer steps cost on this rank.
type OuterStats struct {
	Steps   int64         // outer steps taken
	Elapsed time.Duration // in the outer step's collectives (scalars, reduce-scatter, all-gather)
}

// int8Collective is the ring's int8 reduce-scatter (*allreduce.Ring).
type int8Collective interface {
	ReduceScatterInt8(ctx context.Context, step uint64, buf []float32) error
}

func newDiLoCo(cfg TrainerConfig, ml *mod.Layout, layout shard.Layout, coll Collective) (*diloco, *shard.Optimizer, error) {
	s := *cfg.Sync
	if s.Int8() && cfg.World > 1 {
		if _, ok := coll.(int8Collective); !ok {
			return nil, nil, fmt.Errorf("trainer: sync.compress int8 needs a ring with an int8 reduce-scatter")
		}
	}
	outer, err := shard.NewOuterOptimizer(s.OuterLR, s.OuterMomentum, s.Nesterov, layout, cfg.Rank)
	if err != nil {
		return nil, nil, fmt.Errorf("trainer: %w", err)
	}
	whole, err := shard.NewLayout(ml.Total, 1)
	if err != nil {
		return nil, nil, err
	}
	inner, err := shard.NewOptimizer(cfg.Optim, whole, 0, ml.DecaySpans())
	if err != nil {
		return nil, nil, err
	}
	d := &diloco{sync: s, outer: outer, global: make([]float32, ml.Total), buf: make([]float32, ml.Total),
		zeros: make([]float32, outer.Hi-outer.Lo)}
	return d, inner, nil
}

// IsDiLoCo reports whether the trainer runs DiLoCo.
func (t *Trainer) IsDiLoCo() bool { return t.dl != nil }

// OuterStats is what the outer steps have cost so far (zero unless DiLoCo).
func (t *Trainer) OuterStats() OuterStats {
	if t.dl == nil {
		return OuterStats{}
	}
	return t.dl.stats
}

// OuterOptimizer is this rank's outer state (nil unless DiLoCo).
func (t *Trainer) OuterOptimizer() *shard.OuterOptimizer {
	if t.dl == nil {
		return nil
	}
	return t.dl.outer
}

// stepDiLoCo is one inner step, followed by the outer step when the step
// ends a round.
func (t *Trainer) stepDiLoCo(ctx context.Context) (StepResult, error) {
	s := t.step
	if t.dl.sync.InWarmup(s) {
		return t.stepDiLoCoWarmup(ctx)
	}
	if s == t.dl.sync.WarmupSteps || t.dl.sync.IsOuterStep(s, t.cfg.TotalSteps) {
		// The round starts from the global parameters: a fresh model, the
		// warm-up's last step, a restored checkpoint or the last all-gather.
		copy(t.dl.global, t.model.Params())
	}
	loss, err := t.localGradients(s)
	if err != nil {
		return StepResult{}, err
	}
	grads, params := t.model.Grads(), t.model.Params()
	// The local mean gradient, clipped by its own norm: nothing is shared
	// until the round ends.
	sumSq := mod.SumSquares(grads)
	if err := checkScalars(s+1, sumSq, loss.CE, loss.Total); err != nil {
		return StepResult{}, err
	}
	lr := t.cfg.Optim.LRAt(int(s), int(t.cfg.TotalSteps))
	if err := t.opt.Update(params, grads, int(s)+1, lr, t.cfg.Optim.ClipScale(sumSq)); err != nil {
		return StepResult{}, fmt.Errorf("step %d: %w", s+1, err)
	}
	t.step++
	res := StepResult{Step: t.step, Loss: loss.CE, Total: loss.Total, GradNorm: math.Sqrt(sumSq), LR: lr,
		Tokens: t.TokensPerStep()}
	if !t.dl.sync.IsOuterStep(t.step, t.cfg.TotalSteps) {
		return res, nil
	}
	share := float64(t.hi-t.lo) / float64(t.cfg.GlobalBatch)
	t0 := time.Now()
	t.scalars[0], t.scalars[1], t.scalars[2], t.scalars[3] = 0, loss.CE*share, loss.Total*share, 0
	if t.stop.Load() {
		t.scalars[3] = 1
	}
	if err := t.outerStep(ctx, uint64(s)); err != nil {
		// The round's inner steps are lost with the generation; the next
		// one resumes from the last checkpoint, an outer boundary.
		return StepResult{}, fmt.Errorf("step %d outer step: %w", t.step, err)
	}
	t.dl.stats.Steps++
	t.dl.stats.Elapsed += time.Since(t0)
	res.Loss, res.Total, res.Stop, res.Outer = t.scalars[1], t.scalars[2], t.scalars[3] > 0, true
	return res, nil
}

// stepDiLoCoWarmup is a step of sync.warmup_steps: synchronous, with
// every-step's bytes on the bus, but every rank updates the whole vector
// with its (whole-vector) inner AdamW. The ring reduce-scatters the
// gradient, the scalars give the global norm exactly as every-step forms
// it, and an all-gather hands every rank the whole mean gradient, where
// every-step all-gathers the updated parameters instead. AdamW works
// element by element, so every rank lands on every-step's parameters bit
// for bit, and the inner moments are every-step's moments, gathered: the
// rounds start where synchronous training would be, with its optimizer
// state (TestDiLoCoWarmupEqualsEveryStep).
func (t *Trainer) stepDiLoCoWarmup(ctx context.Context) (StepResult, error) {
	s := t.step
	loss, err := t.localGradients(s)
	if err != nil {
		return StepResult{}, err
	}
	grads, params := t.model.Grads(), t.model.Params()
	lo, hi := t.dl.outer.Lo, t.dl.outer.Hi // every-step's AdamW range of this rank
	if err := t.reduceGradients(ctx, loss, grads, lo, hi); err != nil {
		return StepResult{}, err
	}
	if t.cfg.World > 1 {
		if err := t.coll.AllGather(ctx, uint64(s), grads); err != nil {
			return StepResult{}, fmt.Errorf("step %d gradient all-gather: %w", s+1, err)
		}
	}
	lr, err := t.update(s, params, grads)
	if err != nil {
		return StepResult{}, err
	}
	return t.finishSyncStep(lr), nil
}

// outerStep runs steps 1-4 of the outer step (see diloco) and leaves the
// new global parameters in the model and in global.
func (t *Trainer) outerStep(ctx context.Context, seq uint64) error {
	d, params, world := t.dl, t.model.Params(), t.cfg.World
	if world > 1 {
		if err := t.coll.AllReduceScalars(ctx, seq, t.scalars); err != nil {
			return fmt.Errorf("loss all-reduce: %w", err)
		}
	}
	kind := shard.ReducedParams
	if d.sync.Int8() {
		kind = shard.ReducedDeltas
		for i, g := range d.global {
			d.buf[i] = g - params[i]
		}
	} else {
		copy(d.buf, params)
	}
	if world > 1 {
		var err error
		if kind == shard.ReducedDeltas {
			err = t.coll.(int8Collective).ReduceScatterInt8(ctx, seq, d.buf)
		} else {
			err = t.coll.ReduceScatter(ctx, seq, d.buf)
		}
		if err != nil {
			return fmt.Errorf("reduce-scatter: %w", err)
		}
	}
	if err := d.outer.Step(d.global, d.buf, world, kind); err != nil {
		return err
	}
	lo, hi := d.outer.Lo, d.outer.Hi
	copy(params[lo:hi], d.global[lo:hi])
	if world > 1 {
		if err := t.coll.AllGather(ctx, seq, params); err != nil {
			return fmt.Errorf("all-gather: %w", err)
		}
	}
	return nil // the next step copies params into global
}
