package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// trainSpec is the part of a job spec that `modcoord train` reads.
type trainSpec struct {
	Model mod.Config      `json:"model"`
	Optim mod.OptimConfig `json:"optim"`
	Batch int             `json:"batch"`
	Seed  uint64          `json:"seed"`
}

func defaultTrainSpec() trainSpec {
	return trainSpec{Model: mod.DefaultConfig(), Optim: mod.DefaultOptim(), Batch: 32, Seed: 1}
}

// loadTrainSpec reads a YAML or JSON file over the defaults; unknown fields
// are refused so a typo never silently trains the wrong model.
func loadTrainSpec(path string) (trainSpec, error) {
	spec := defaultTrainSpec()
	if path == "" {
		return spec, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return spec, fmt.Errorf("read config: %w", err)
	}
	spec.Model = mod.Config{}
	if err := yaml.UnmarshalStrict(raw, &spec); err != nil {
		return spec, fmt.Errorf("config %s: %w", path, err)
	}
	spec.Model = spec.Model.WithDefaults()
	return spec, nil
}

// trainOptions are train's flags.
type trainOptions struct {
	data, config, out, resume, cpuProfile string
	steps, evalEvery, ckEvery, logEvery   int64
	evalWindows, keep                     int
	dense, jsonOut                        bool
}

func newTrainCmd(e env) *cobra.Command {
	var o trainOptions
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a model in this process",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrain(cmd, o)
		},
	}
	fs := cmd.Flags()
	addDataFlag(fs, &o.data, "training corpus (any file; bytes are tokens)")
	fs.StringVar(&o.config, "config", "", "YAML or JSON file with model, optim, batch and seed (default: the built-in MoD config)")
	fs.Int64Var(&o.steps, "steps", 600, "training steps")
	fs.StringVar(&o.out, "out", "", "directory for the final weights (safetensors)")
	fs.Int64Var(&o.evalEvery, "eval-every", 250, "estimate validation loss every N steps (0: only at the end)")
	fs.IntVar(&o.evalWindows, "eval-windows", 64, "validation windows for the periodic estimate; the final evaluation uses all")
	fs.BoolVar(&o.dense, "dense", false, "train the dense model of the same shape instead")
	fs.Int64Var(&o.ckEvery, "checkpoint-every", 0, "also checkpoint to --out every N steps (0: only at the end)")
	fs.IntVar(&o.keep, "keep", 3, "committed checkpoints to keep in --out")
	fs.Int64Var(&o.logEvery, "log-every", 10, "print progress every N steps")
	fs.StringVar(&o.resume, "resume", "", "continue from this checkpoint (written by --out); model, optimizer and data order come from it")
	addJSONFlag(cmd, &o.jsonOut)
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	return cmd
}

func runTrain(cmd *cobra.Command, o trainOptions) error {
	ctx, stdout, stderr := cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	if o.steps < 1 {
		return usageErrorf("--steps %d: need at least 1", o.steps)
	}
	if o.ckEvery < 0 || (o.ckEvery > 0 && o.out == "") {
		return usageErrorf("--checkpoint-every %d needs --out and a value ≥ 0", o.ckEvery)
	}
	if o.logEvery < 1 {
		return usageErrorf("--log-every %d: need at least 1", o.logEvery)
	}
	if o.resume != "" && (o.config != "" || o.dense) {
		return usageErrorf("--resume takes the model from the checkpoint; drop --config and --dense")
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	spec, err := loadTrainSpec(o.config)
	if err != nil {
		return err
	}
	var resumeFrom *train.Opened
	if o.resume != "" {
		if resumeFrom, err = openCheckpoint(ctx, stderr, o.resume); err != nil {
			return err
		}
		ck := resumeFrom.Config
		spec = trainSpec{Model: ck.Model, Optim: ck.Optim, Batch: ck.Batch, Seed: ck.Seed}
		if !cmd.Flags().Changed("steps") {
			o.steps = ck.TotalSteps
		}
		if o.steps <= resumeFrom.Manifest.Step {
			return usageErrorf("--steps %d: the checkpoint in %s is already at step %d, so there is nothing to train; pass --steps above %d to train further",
				o.steps, o.resume, resumeFrom.Manifest.Step, resumeFrom.Manifest.Step)
		}
	}
	if o.dense {
		spec.Model = spec.Model.Dense()
	}
	if err := spec.Model.Validate(); err != nil {
		return err
	}
	if spec.Batch < 1 {
		return fmt.Errorf("batch %d: need at least 1 sequence per step", spec.Batch)
	}
	ds, err := mod.LoadDataset(o.data)
	if err != nil {
		return fmt.Errorf("--data %s: %w", o.data, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	log.Info("training", "model", spec.Model.String(), "batch", spec.Batch, "steps", o.steps,
		"flops_per_step", spec.Model.TrainFLOPs(spec.Batch).Total(), "blas", mod.BLASEngine())
	if w := warmupWarning(o.steps, spec.Optim); w != "" {
		fmt.Fprintln(stderr, w)
	}

	tr, err := train.NewTrainer(train.TrainerConfig{
		Model: spec.Model, Optim: spec.Optim, GlobalBatch: spec.Batch, TotalSteps: o.steps,
		Seed: spec.Seed, Rank: 0, World: 1,
	}, ds, nil)
	if err != nil {
		return err
	}
	defer tr.Close()
	if resumeFrom != nil {
		if err := tr.Restore(ctx, resumeFrom.Store, resumeFrom.Manifest, true); err != nil {
			return fmt.Errorf("resume from %s: %w", resumeFrom.Dir, err)
		}
		log.Info("resumed", "checkpoint", resumeFrom.Dir, "step", resumeFrom.Manifest.Step)
	}
	eval, err := mod.NewParallelWithParams(spec.Model, 16, 0, tr.Model().Params())
	if err != nil {
		return err
	}
	defer eval.Close()
	save := func(ctx context.Context) error {
		dir, err := tr.SaveLocal(ctx, o.out)
		if err != nil {
			return fmt.Errorf("checkpoint to %s: %w", o.out, err)
		}
		if err := train.PruneLocal(ctx, o.out, o.keep); err != nil {
			log.Warn("prune old checkpoints", "err", err)
		}
		log.Info("checkpoint committed", "dir", dir)
		return nil
	}
	hooks := loopHooks{logEvery: o.logEvery}
	if o.ckEvery > 0 {
		hooks.every, hooks.save = o.ckEvery, save
	}
	res, err := trainLoop(ctx, tr, eval, ds, o.steps, o.evalEvery, o.evalWindows, stderr, hooks)
	if err != nil {
		return err
	}
	res.FLOPs = spec.Model.TrainFLOPs(spec.Batch).Total() * float64(res.Steps)
	if o.out != "" && (o.ckEvery == 0 || res.Steps%o.ckEvery != 0) {
		if err := save(ctx); err != nil {
			return err
		}
	}
	if o.jsonOut {
		return writeJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "steps %d  train loss %.4f  val loss %.4f  %.3g FLOPs  %.1f s  %.0f tokens/s\n",
		res.Steps, res.TrainLoss, res.ValLoss, res.FLOPs, res.WallS, res.TokensPerS)
	return nil
}

// warmupWarning says when a run ends inside the learning-rate warmup: the
// rate never reaches its peak and the cosine decay never starts, which is
// rarely what a short run meant to measure.
func warmupWarning(steps int64, o mod.OptimConfig) string {
	if steps >= int64(o.WarmupSteps) {
		return ""
	}
	return fmt.Sprintf("warning: --steps %d is below the optimizer's %d warmup steps: the learning rate reaches only %.2e (peak %.2e) and never decays",
		steps, o.WarmupSteps, o.LR*float64(steps)/float64(o.WarmupSteps), o.LR)
}

// trainResult is the summary `train --json` prints.
type trainResult struct {
	Steps      int64     `json:"steps"`
	TrainLoss  float64   `json:"train_loss"`
	ValLoss    float64   `json:"val_loss"`
	FLOPs      float64   `json:"flops"`
	WallS      float64   `json:"wall_s"`
	TokensPerS float64   `json:"tokens_per_s"`
	Losses     []float64 `json:"losses,omitempty"`
}

// loopHooks are trainLoop's optional periodic actions.
type loopHooks struct {
	logEvery int64
	every    int64 // checkpoint period (0: none)
	save     func(context.Context) error
}

func trainLoop(ctx context.Context, tr *train.Trainer, eval *mod.Parallel[float32], ds *mod.Dataset, steps, evalEvery int64, evalWindows int, logw io.Writer, hooks loopHooks) (trainResult, error) {
	start := time.Now()
	var res trainResult
	var tokens int
	first := tr.StepsDone()
	var smooth float64
	var meter rateMeter
	for tr.StepsDone() < steps {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("interrupted at step %d: %w", tr.StepsDone(), err)
		}
		r, err := tr.Step(ctx)
		if err != nil {
			return res, err
		}
		tokens += r.Tokens
		res.Losses = append(res.Losses, r.Loss)
		if smooth == 0 {
			smooth = r.Loss
		}
		smooth = 0.9*smooth + 0.1*r.Loss
		el := time.Since(start).Seconds()
		if hooks.every > 0 && r.Step%hooks.every == 0 {
			if err := hooks.save(ctx); err != nil {
				return res, err
			}
		}
		meter.observe(r.Step, time.Now())
		if r.Step%max(hooks.logEvery, 1) == 0 || r.Step == steps {
			fmt.Fprintln(logw, progressText(progress{
				step: r.Step, total: steps, loss: smooth, hasLoss: true, lr: r.LR, gradNorm: r.GradNorm,
				tokPerS: float64(tokens) / el, budgetFrac: -1, eta: meter.eta(r.Step, steps),
				elapsed: time.Duration(el * float64(time.Second)),
			}))
		}
		if evalEvery > 0 && r.Step%evalEvery == 0 && r.Step < steps {
			v, err := mod.EvalLoss(eval, ds, evalWindows)
			if err != nil {
				return res, err
			}
			fmt.Fprintf(logw, "step %5d  val loss %.4f (%d windows)\n", r.Step, v, evalWindows)
		}
		res.TrainLoss = smooth
	}
	res.Steps = tr.StepsDone() - first
	res.WallS = time.Since(start).Seconds()
	res.TokensPerS = float64(tokens) / res.WallS
	v, err := mod.EvalLoss(eval, ds, 0)
	if err != nil {
		return res, err
	}
	res.ValLoss = v
	fmt.Fprintf(logw, "final val loss %.4f over the whole validation split\n", v)
	return res, nil
}
