package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

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

func cmdTrain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	data := fs.String("data", "data/tinyshakespeare.txt", "training corpus (any file; bytes are tokens)")
	config := fs.String("config", "", "YAML or JSON file with model, optim, batch and seed (default: the built-in MoD config)")
	steps := fs.Int64("steps", 600, "training steps")
	out := fs.String("out", "", "directory for the final weights (safetensors)")
	evalEvery := fs.Int64("eval-every", 250, "estimate validation loss every N steps (0: only at the end)")
	evalWindows := fs.Int("eval-windows", 64, "validation windows for the periodic estimate; the final evaluation uses all")
	dense := fs.Bool("dense", false, "train the dense model of the same shape instead")
	ckEvery := fs.Int64("checkpoint-every", 0, "also checkpoint to --out every N steps (0: only at the end)")
	keep := fs.Int("keep", 3, "committed checkpoints to keep in --out")
	logEvery := fs.Int64("log-every", 10, "print progress every N steps")
	resume := fs.String("resume", "", "continue from this checkpoint (written by --out); model, optimizer and data order come from it")
	jsonOut := fs.Bool("json", false, "print a JSON summary as the last line of stdout")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *steps < 1 {
		return fmt.Errorf("--steps %d: need at least 1", *steps)
	}
	if *ckEvery < 0 || (*ckEvery > 0 && *out == "") {
		return fmt.Errorf("--checkpoint-every %d needs --out and a value ≥ 0", *ckEvery)
	}
	if *logEvery < 1 {
		return fmt.Errorf("--log-every %d: need at least 1", *logEvery)
	}
	spec, err := loadTrainSpec(*config)
	if err != nil {
		return err
	}
	var resumeFrom *train.Opened
	if *resume != "" {
		if *config != "" || *dense {
			return fmt.Errorf("--resume takes the model from the checkpoint; drop --config and --dense")
		}
		if resumeFrom, err = openCheckpoint(ctx, *resume); err != nil {
			return err
		}
		ck := resumeFrom.Config
		spec = trainSpec{Model: ck.Model, Optim: ck.Optim, Batch: ck.Batch, Seed: ck.Seed}
		if !flagGiven(fs, "steps") {
			*steps = ck.TotalSteps
		}
		if *steps <= resumeFrom.Manifest.Step {
			return fmt.Errorf("--steps %d: the checkpoint in %s is already at step %d, so there is nothing to train; pass --steps above %d to train further",
				*steps, *resume, resumeFrom.Manifest.Step, resumeFrom.Manifest.Step)
		}
	}
	if *dense {
		spec.Model = spec.Model.Dense()
	}
	if err := spec.Model.Validate(); err != nil {
		return err
	}
	if spec.Batch < 1 {
		return fmt.Errorf("batch %d: need at least 1 sequence per step", spec.Batch)
	}
	ds, err := mod.LoadDataset(*data)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log.Info("training", "model", spec.Model.String(), "batch", spec.Batch, "steps", *steps,
		"flops_per_step", spec.Model.TrainFLOPs(spec.Batch).Total(), "blas", mod.BLASEngine())

	tr, err := train.NewTrainer(train.TrainerConfig{
		Model: spec.Model, Optim: spec.Optim, GlobalBatch: spec.Batch, TotalSteps: *steps,
		Seed: spec.Seed, Rank: 0, World: 1,
	}, ds, nil)
	if err != nil {
		return err
	}
	defer tr.Close()
	if resumeFrom != nil {
		if err := tr.Restore(ctx, resumeFrom.Store, resumeFrom.Manifest, true); err != nil {
			return err
		}
		log.Info("resumed", "checkpoint", resumeFrom.Dir, "step", resumeFrom.Manifest.Step)
	}
	eval, err := mod.NewParallelWithParams(spec.Model, 16, 0, tr.Model().Params())
	if err != nil {
		return err
	}
	defer eval.Close()
	save := func(ctx context.Context) error {
		dir, err := tr.SaveLocal(ctx, *out)
		if err != nil {
			return err
		}
		if err := train.PruneLocal(ctx, *out, *keep); err != nil {
			log.Warn("prune old checkpoints", "err", err)
		}
		log.Info("checkpoint committed", "dir", dir)
		return nil
	}
	hooks := loopHooks{logEvery: *logEvery}
	if *ckEvery > 0 {
		hooks.every, hooks.save = *ckEvery, save
	}
	res, err := trainLoop(ctx, tr, eval, ds, *steps, *evalEvery, *evalWindows, os.Stderr, hooks)
	if err != nil {
		return err
	}
	res.FLOPs = spec.Model.TrainFLOPs(spec.Batch).Total() * float64(res.Steps)
	if *out != "" && (*ckEvery == 0 || res.Steps%*ckEvery != 0) {
		if err := save(ctx); err != nil {
			return err
		}
	}
	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("steps %d  train loss %.4f  val loss %.4f  %.3g FLOPs  %.1f s  %.0f tokens/s\n",
		res.Steps, res.TrainLoss, res.ValLoss, res.FLOPs, res.WallS, res.TokensPerS)
	return nil
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

func trainLoop(ctx context.Context, tr *train.Trainer, eval *mod.Parallel[float32], ds *mod.Dataset, steps, evalEvery int64, evalWindows int, progress io.Writer, hooks loopHooks) (trainResult, error) {
	start := time.Now()
	var res trainResult
	var tokens int
	first := tr.StepsDone()
	var smooth float64
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
		if r.Step%max(hooks.logEvery, 1) == 0 || r.Step == steps {
			fmt.Fprintf(progress, "step %5d/%d  loss %.4f  lr %.2e  |g| %.2f  %.0f tok/s  %.0fs\n", r.Step, steps, smooth, r.LR, r.GradNorm, float64(tokens)/el, el)
		}
		if evalEvery > 0 && r.Step%evalEvery == 0 && r.Step < steps {
			v, err := mod.EvalLoss(eval, ds, evalWindows)
			if err != nil {
				return res, err
			}
			fmt.Fprintf(progress, "step %5d  val loss %.4f (%d windows)\n", r.Step, v, evalWindows)
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
	fmt.Fprintf(progress, "final val loss %.4f over the whole validation split\n", v)
	return res, nil
}

// flagGiven reports whether the flag was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
