package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/modcoord/modcoord/allreduce"

	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// benchDiLoCoRun is what one benchmark run trains: the synchronisation
// mode, the step count and the evaluation cadence. diloco-rank (one rank
// behind a shaped link) and diloco-local (every rank in one process, for
// tuning without a network) share it, so both train the same bits.
type benchDiLoCoRun struct {
	mode, compress         string
	evalWindows            int
	inner, steps           int64
	evalEvery              int64
	outerLR, outerMomentum float64
	lr                     float64 // AdamW's peak learning rate (DiLoCo's inner)
	warmup                 int64   // DiLoCo's sync.warmup_steps
	seed                   uint64  // data order
}

func (o *benchDiLoCoRun) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.mode, "mode", jobspec.SyncEveryStep, "every-step or diloco")
	fs.StringVar(&o.compress, "compress", jobspec.CompressNone, "DiLoCo outer gradients: none or int8")
	fs.IntVar(&o.evalWindows, "eval-windows", 32, "validation windows per evaluation")
	fs.Int64Var(&o.inner, "inner-steps", 100, "DiLoCo inner steps per round")
	fs.Int64Var(&o.steps, "steps", 600, "training steps")
	fs.Int64Var(&o.evalEvery, "eval-every", 20, "steps between evaluations (a multiple of --inner-steps for DiLoCo)")
	fs.Float64Var(&o.outerLR, "outer-lr", jobspec.DefaultOuterLR, "DiLoCo outer learning rate")
	fs.Float64Var(&o.outerMomentum, "outer-momentum", jobspec.DefaultOuterMomentum, "DiLoCo outer momentum")
	fs.Int64Var(&o.warmup, "sync-warmup", 0, "DiLoCo: steps that sync every step before the rounds start (a multiple of --inner-steps)")
	fs.Float64Var(&o.lr, "lr", benchDiLoCoLR, "AdamW peak learning rate (DiLoCo's inner steps)")
	fs.Uint64Var(&o.seed, "seed", 1, "data order: the seed of every step's batch")
}

// sync checks the flags and returns the run's sync setting (nil for
// every-step).
func (o *benchDiLoCoRun) sync() (*jobspec.Sync, error) {
	if !(o.lr > 0 && o.lr <= 1) {
		return nil, usageErrorf("--lr %v: use (0, 1]", o.lr)
	}
	if o.steps < 1 || o.evalEvery < 1 || o.evalWindows < 1 {
		return nil, usageErrorf("--steps %d, --eval-every %d, --eval-windows %d: each needs at least 1", o.steps, o.evalEvery, o.evalWindows)
	}
	switch o.mode {
	case jobspec.SyncEveryStep:
		return nil, nil
	case jobspec.SyncDiLoCo:
	default:
		return nil, usageErrorf("--mode %q: use %s or %s", o.mode, jobspec.SyncEveryStep, jobspec.SyncDiLoCo)
	}
	if o.inner < 1 {
		return nil, usageErrorf("--inner-steps %d: need at least 1", o.inner)
	}
	if o.warmup < 0 || o.warmup%o.inner != 0 {
		return nil, usageErrorf("--sync-warmup %d: use a multiple of --inner-steps %d, so that rounds end where evaluations happen", o.warmup, o.inner)
	}
	if o.evalEvery%o.inner != 0 {
		return nil, usageErrorf("--eval-every %d: DiLoCo evaluates global parameters only, so use a multiple of --inner-steps %d", o.evalEvery, o.inner)
	}
	s := jobspec.DefaultDiLoCo(o.inner)
	s.OuterLR, s.OuterMomentum, s.Compress, s.WarmupSteps = o.outerLR, o.outerMomentum, o.compress, o.warmup
	return &s, nil
}

// evalAt reports whether the run evaluates after step (1-based).
func (o *benchDiLoCoRun) evalAt(step int64) bool {
	return step%o.evalEvery == 0 || step == o.steps
}

// The benchmark's global batch (sequences per step) and default AdamW
// peak learning rate.
const (
	benchDiLoCoBatch = 16
	benchDiLoCoLR    = 3e-3
)

// benchDiLoCoConfig is rank's trainer in the benchmark: a model small
// enough that four ranks train it on a shared two-core machine in
// minutes, the same for every mode.
func benchDiLoCoConfig(rank, world int, steps int64, lr float64, seed uint64, sync *jobspec.Sync) train.TrainerConfig {
	model := mod.Config{DModel: 64, Layers: 2, Heads: 2, SeqLen: 64, Capacity: 0.5, Seed: 3}.WithDefaults()
	optim := mod.DefaultOptim()
	optim.LR = lr
	return train.TrainerConfig{Model: model, Optim: optim, GlobalBatch: benchDiLoCoBatch, TotalSteps: steps,
		Seed: seed, Rank: rank, World: world, Sync: sync}
}

// benchDiLoCoFLOPs is the benchmark model's FLOPs per step (all ranks) and
// per outer step.
func benchDiLoCoFLOPs(sync *jobspec.Sync) (perStep, outer float64) {
	model := benchDiLoCoConfig(0, 1, 1, benchDiLoCoLR, 1, sync).Model
	return model.TrainFLOPs(benchDiLoCoBatch).Total(), sync.OuterFLOPsPerParam() * float64(mod.NewLayout(model).Total)
}

// benchLocalPoint is one evaluation of a diloco-local run. HeldOut is set
// on the last line only: the loss over the validation windows the
// benchmark does not report, the criterion to tune on.
type benchLocalPoint struct {
	benchRankPoint
	HeldOut        float64 `json:"heldout_loss,omitempty"`
	HeldOutWindows [2]int  `json:"heldout_windows,omitzero"`
}

// newBenchDiLoCoLocalCmd runs every rank of a benchmark run in one
// process over an in-memory ring: the same trainers, batches and ring
// arithmetic as tools/diloco_bench.sh, so the same losses bit for bit,
// without namespaces, shaping or root. For tuning; its wall-clock and
// bytes say nothing about a network.
func newBenchDiLoCoLocalCmd() *cobra.Command {
	var o struct {
		benchDiLoCoRun
		data  string
		world int
	}
	cmd := &cobra.Command{
		Use:    "diloco-local",
		Short:  "Every rank of one DiLoCo benchmark run in one process, unshaped (for tuning)",
		Hidden: true,
		Args:   noSubcommandArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sync, err := o.sync()
			if err != nil {
				return err
			}
			if o.world < 1 || o.world > benchDiLoCoBatch {
				return usageErrorf("--world %d: use 1..%d (every rank needs a sequence of the batch of %d)", o.world, benchDiLoCoBatch, benchDiLoCoBatch)
			}
			ds, err := mod.LoadDataset(o.data)
			if err != nil {
				return err
			}
			pts, err := runBenchDiLoCoLocal(cmd.Context(), o.benchDiLoCoRun, o.world, sync, ds)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			for _, p := range pts {
				if err := enc.Encode(p); err != nil {
					return err
				}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.data, "data", "data/tinyshakespeare.txt", "text file to train on")
	fs.IntVar(&o.world, "world", 4, "ranks in all")
	o.benchDiLoCoRun.flags(fs)
	return cmd
}

// runBenchDiLoCoLocal trains world ranks over an in-memory ring and
// returns rank 0's evaluations; the last carries the held-out loss.
func runBenchDiLoCoLocal(ctx context.Context, o benchDiLoCoRun, world int, sync *jobspec.Sync, ds mod.Data) ([]benchLocalPoint, error) {
	mt := allreduce.NewMemTransport(1 << 22)
	trs := make([]*train.Trainer, world)
	rings := make([]*allreduce.Ring, world)
	defer func() {
		for r := range trs {
			if trs[r] != nil {
				trs[r].Close()
			}
			if rings[r] != nil {
				rings[r].Close()
			}
		}
	}()
	for r := range trs {
		var err error
		if rings[r], err = allreduce.NewRing(mt, allreduce.Config{Job: "diloco-local", Generation: 1, Rank: r, World: world, Deadline: 120 * time.Second}); err != nil {
			return nil, err
		}
		if trs[r], err = train.NewTrainer(benchDiLoCoConfig(r, world, o.steps, o.lr, o.seed, sync), ds, rings[r]); err != nil {
			return nil, err
		}
	}
	perStep, outer := benchDiLoCoFLOPs(sync)
	start := time.Now()
	var pts []benchLocalPoint
	errs := make(chan error, world)
	for r, tr := range trs {
		go func() {
			errs <- func() error {
				for tr.StepsDone() < o.steps {
					res, err := tr.Step(ctx)
					if err != nil {
						return fmt.Errorf("rank %d: %w", r, err)
					}
					if !o.evalAt(res.Step) {
						continue
					}
					val, err := tr.EvalLoss(ctx, o.evalWindows)
					if err != nil {
						return fmt.Errorf("rank %d: %w", r, err)
					}
					st := tr.OuterStats()
					p := benchRankPoint{Mode: benchModeName(sync), Step: res.Step,
						Seconds: time.Since(start).Seconds(), ValLoss: val, TrainLoss: res.Loss, SentBytes: rings[r].Stats().SentBytes,
						Tokens: res.Step * int64(tr.TokensPerStep()), OuterSteps: st.Steps, OuterSeconds: st.Elapsed.Seconds(),
						FLOPs: float64(res.Step)*perStep + float64(st.Steps)*outer}
					if res.Step == o.steps {
						if p.ValLossAll, err = tr.EvalLoss(ctx, 0); err != nil {
							return fmt.Errorf("rank %d: %w", r, err)
						}
					}
					if r == 0 {
						pts = append(pts, benchLocalPoint{benchRankPoint: p})
					}
				}
				return nil
			}()
		}()
	}
	var first error
	for range trs {
		if err := <-errs; err != nil && first == nil {
			first = err
			for _, rg := range rings {
				rg.Close() // unblock the other ranks
			}
		}
	}
	if first != nil {
		return nil, first
	}
	// Every rank holds the same global parameters after the last (outer)
	// step; rank 0's are evaluated on the windows the benchmark leaves out.
	model := benchDiLoCoConfig(0, world, o.steps, o.lr, o.seed, sync).Model
	lo, hi := o.evalWindows, ds.ValWindows(model.SeqLen)
	if lo >= hi {
		return pts, nil
	}
	ev, err := mod.NewParallelWithParams(model, train.EvalBatch, 0, trs[0].Model().Params())
	if err != nil {
		return nil, err
	}
	defer ev.Close()
	sum, count, err := mod.EvalSum(ev, ds, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("held-out loss: %w", err)
	}
	last := &pts[len(pts)-1]
	last.HeldOut, last.HeldOutWindows = sum/float64(count), [2]int{lo, hi}
	return pts, nil
}
