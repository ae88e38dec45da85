package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/corpus"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/tokenizer"
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

// trainConfig is what --config gave: the model and optimizer, and, when
// the file is a whole job spec (it has name or budget_flops), that spec
// and the fields it set.
type trainConfig struct {
	trainSpec
	job  *jobspec.Spec
	plan jobspec.Plan
	set  map[string]bool // top-level fields present in the file
}

// loadTrainSpec reads a YAML or JSON file over the defaults; unknown fields
// are refused so a typo never silently trains the wrong model. A file with
// name or budget_flops is a job spec, the one `submit` takes, and is
// parsed and validated exactly as submit does (jobspec.Parse); other files
// give only model, optim, batch and seed.
func loadTrainSpec(path string) (trainConfig, error) {
	cfg := trainConfig{trainSpec: defaultTrainSpec()}
	if path == "" {
		return cfg, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(raw, &keys); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.set = map[string]bool{}
	for k := range keys {
		cfg.set[k] = true
	}
	if cfg.set["name"] || cfg.set["budget_flops"] {
		spec, err := jobspec.Parse(raw, jobspec.Limits{})
		if err != nil {
			return cfg, fmt.Errorf("job spec %s:\n  %s", path, strings.Join(jobspec.FieldErrors(err), "\n  "))
		}
		if cfg.plan, err = spec.Plan(jobspec.Limits{}); err != nil {
			return cfg, err
		}
		if spec.Sync.IsDiLoCo() {
			return cfg, fmt.Errorf("job spec %s: sync.mode diloco synchronises several workers; train it with a cluster (modcoord submit or local), or drop sync for one process", path)
		}
		cfg.job = &spec
		cfg.trainSpec = trainSpec{Model: spec.Model, Optim: spec.Optim, Batch: spec.Batch, Seed: spec.Seed}
		return cfg, nil
	}
	cfg.Model = mod.Config{}
	if err := yaml.UnmarshalStrict(raw, &cfg.trainSpec); err != nil {
		return cfg, fmt.Errorf("config %s: %w (a whole job spec, as submit takes, needs name and budget_flops)", path, err)
	}
	cfg.Model = cfg.Model.WithDefaults()
	return cfg, nil
}

// clusterOnly lists the job-spec fields a file set that `train` ignores.
func (c trainConfig) clusterOnly() []string {
	var out []string
	for _, k := range []string{"min_workers", "max_workers", "init_from"} {
		if c.set[k] {
			out = append(out, k)
		}
	}
	return out
}

// openTrainData opens --data: a text file (bytes are tokens, the last
// 10% validates) or a directory of token shards prepared by `modcoord
// prepare` (or named *train*.bin / *val*.bin).
func openTrainData(path string) (*corpus.Corpus, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w (give a text file or a directory made by `modcoord prepare`)", path, err)
	}
	if st.IsDir() {
		c, err := corpus.OpenDir(path)
		if err != nil {
			return nil, fmt.Errorf("--data %s: %w", path, err)
		}
		return c, nil
	}
	if st.Size() > jobspec.MaxDataBytes {
		return nil, fmt.Errorf("--data %s: %d bytes is over the %d-byte limit for a text file; prepare it into token shards with `modcoord prepare`", path, st.Size(), int64(jobspec.MaxDataBytes))
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", path, err)
	}
	c, err := corpus.FromText(text)
	if err != nil {
		return nil, fmt.Errorf("--data %s: %w", path, err)
	}
	return c, nil
}

// trainOptions are train's flags.
type trainOptions struct {
	data, dataRoot, config, out, resume, cpuProfile string
	steps, evalEvery, ckEvery, logEvery             int64
	evalWindows, keep                               int
	dense, jsonOut                                  bool
}

func newTrainCmd(e env) *cobra.Command {
	var o trainOptions
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a model in this process",
		Long: `Train a model in this process. --config takes the job spec submit takes
(name, data, model, optim, batch, budget_flops, eval_every, ...): its budget
sets the steps and its data (relative to --data-root) the corpus, unless
--steps or --data say otherwise; the fields only a cluster uses
(min_workers, max_workers, init_from) are ignored with a warning. A file
with only model, optim, batch and seed works too.

--data is a text file (bytes are tokens; the last 10% validates) or a
directory of token shards made by ` + "`modcoord prepare`" + `.`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrain(cmd, o)
		},
	}
	fs := cmd.Flags()
	addDataFlag(fs, &o.data, "training corpus: a text file (bytes are tokens) or a directory prepared by `modcoord prepare`")
	fs.StringVar(&o.dataRoot, "data-root", ".", "directory a --config job spec's data path is relative to (used when --data is not given)")
	fs.StringVar(&o.config, "config", "", "job spec (YAML or JSON, as submit takes) or a file with model, optim, batch and seed (default: the built-in MoD config)")
	fs.Int64Var(&o.steps, "steps", 600, "training steps (default with a job spec: what its budget_flops buys)")
	fs.StringVar(&o.out, "out", "", "directory for the final weights (safetensors)")
	fs.Int64Var(&o.evalEvery, "eval-every", 250, "estimate validation loss every N steps (0: only at the end; default with a job spec: its eval_every)")
	fs.IntVar(&o.evalWindows, "eval-windows", jobspec.DefaultEvalWindows, "validation windows for the periodic estimate; the final evaluation uses all (default with a job spec: its eval_windows)")
	fs.BoolVar(&o.dense, "dense", false, "train the dense model of the same shape instead")
	fs.Int64Var(&o.ckEvery, "checkpoint-every", 0, "also checkpoint to --out every N steps (0: only at the end; default with a job spec and --out: its checkpoint_every)")
	fs.IntVar(&o.keep, "keep", 3, "committed checkpoints to keep in --out (default with a job spec: its keep_checkpoints)")
	fs.Int64Var(&o.logEvery, "log-every", 10, "print progress every N steps")
	fs.StringVar(&o.resume, "resume", "", "continue from this checkpoint (written by --out); model, optimizer and data order come from it")
	addJSONFlag(cmd, &o.jsonOut)
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	return cmd
}

func runTrain(cmd *cobra.Command, o trainOptions) error {
	ctx, stdout, stderr := cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	changed := cmd.Flags().Changed
	if o.resume != "" && (o.config != "" || o.dense) {
		return usageErrorf("--resume takes the model from the checkpoint; drop --config and --dense")
	}
	cfg, err := loadTrainSpec(o.config)
	if err != nil {
		return err
	}
	tokName := ""
	if job := cfg.job; job != nil {
		// The job spec's own settings, where no flag overrides them.
		if !changed("steps") {
			o.steps = cfg.plan.Steps
		}
		if !changed("eval-every") {
			o.evalEvery = job.EvalEvery
		}
		if !changed("eval-windows") {
			o.evalWindows = job.EvalWindows
		}
		if !changed("checkpoint-every") && o.out != "" && cfg.set["checkpoint_every"] {
			o.ckEvery = job.CheckpointEvery
		}
		if !changed("keep") && cfg.set["keep_checkpoints"] {
			o.keep = job.KeepCheckpoints
		}
		tokName = job.Tokenizer
		if f := cfg.clusterOnly(); len(f) > 0 {
			fmt.Fprintf(stderr, "warning: %s ignores the job spec's cluster-only field(s) %s\n", "train", strings.Join(f, ", "))
		}
	}
	if o.steps < 1 {
		return usageErrorf("--steps %d: need at least 1", o.steps)
	}
	if o.ckEvery < 0 || (o.ckEvery > 0 && o.out == "") {
		return usageErrorf("--checkpoint-every %d needs --out and a value ≥ 0", o.ckEvery)
	}
	if o.logEvery < 1 {
		return usageErrorf("--log-every %d: need at least 1", o.logEvery)
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	spec := cfg.trainSpec
	var resumeFrom *train.Opened
	if o.resume != "" {
		if resumeFrom, err = openCheckpoint(ctx, stderr, o.resume); err != nil {
			return err
		}
		ck := resumeFrom.Config
		spec = trainSpec{Model: ck.Model, Optim: ck.Optim, Batch: ck.Batch, Seed: ck.Seed}
		tokName = ck.TokenizerName()
		if !changed("steps") {
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
	var ds *corpus.Corpus
	if cfg.job != nil && !changed("data") {
		job := *cfg.job
		job.Model = spec.Model
		ds, err = job.OpenCorpus(o.dataRoot)
	} else {
		ds, err = openTrainData(o.data)
	}
	if err != nil {
		return err
	}
	defer ds.Close()
	if tokName, err = checkTrainTokenizer(ds, tokName, spec.Model); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	log.Info("training", "model", spec.Model.String(), "batch", spec.Batch, "steps", o.steps, "tokenizer", tokName,
		"flops_per_step", spec.Model.TrainFLOPs(spec.Batch).Total(), "blas", mod.BLASEngine())
	if w := warmupWarning(o.steps, spec.Optim); w != "" {
		fmt.Fprintln(stderr, w)
	}

	tr, err := train.NewTrainer(train.TrainerConfig{
		Model: spec.Model, Optim: spec.Optim, GlobalBatch: spec.Batch, TotalSteps: o.steps,
		Seed: spec.Seed, Rank: 0, World: 1, Tokenizer: tokName,
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
	res, err := trainLoop(ctx, tr, o.steps, o.evalEvery, o.evalWindows, stderr, hooks)
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
	fmt.Fprintf(stdout, "steps %d  train loss %.4f (ema)  val loss %.4f (all windows)  %.3g FLOPs  %.1f s  %.0f tokens/s\n",
		res.Steps, res.TrainLoss, res.ValLoss, res.FLOPs, res.WallS, res.TokensPerS)
	return nil
}

// checkTrainTokenizer settles the tokenizer of a run: want (from a job
// spec or the checkpoint resumed; "" if neither says) must agree with the
// corpus's recorded one, and the model's vocabulary must cover it. It
// returns the name to record in checkpoints.
func checkTrainTokenizer(ds *corpus.Corpus, want string, model mod.Config) (string, error) {
	got := ds.Tokenizer()
	switch {
	case want == "" && got == "":
		// Shards without a manifest name no tokenizer: a model with
		// GPT-2's vocabulary is taken to read gpt2 ids, any other bytes.
		want = tokenizer.ByteName
		if model.Vocab >= 50257 {
			want = tokenizer.GPT2Name
		}
	case want == "":
		want = got
	case got != "" && got != want:
		return "", fmt.Errorf("tokenizer: the corpus was prepared with %s but the run uses %s; use data prepared with --tokenizer %s", got, want, want)
	}
	tok, err := tokenizer.New(want)
	if err != nil {
		return "", err
	}
	if want != tokenizer.ByteName && model.Vocab < tok.VocabSize() {
		return "", fmt.Errorf("model.vocab: %d is smaller than tokenizer %s's %d tokens; set model.vocab to at least %d", model.Vocab, want, tok.VocabSize(), tok.VocabSize())
	}
	if err := ds.CheckVocab(model.Vocab); err != nil {
		return "", fmt.Errorf("model.vocab: %w", err)
	}
	return want, nil
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

func trainLoop(ctx context.Context, tr *train.Trainer, steps, evalEvery int64, evalWindows int, logw io.Writer, hooks loopHooks) (trainResult, error) {
	start := time.Now()
	var res trainResult
	var tokens int
	first := tr.StepsDone()
	var smooth, val float64
	var valStep int64
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
		if evalEvery > 0 && r.Step%evalEvery == 0 && r.Step < steps {
			if val, err = tr.EvalLoss(ctx, evalWindows); err != nil {
				return res, err
			}
			valStep = r.Step
			fmt.Fprintf(logw, "step %5d  val %.4f (%d windows)\n", r.Step, val, evalWindows)
		}
		meter.observe(r.Step, time.Now())
		if r.Step%max(hooks.logEvery, 1) == 0 || r.Step == steps {
			fmt.Fprintln(logw, progressText(progress{
				step: r.Step, total: steps, loss: smooth, hasLoss: true, ema: true, val: val, valStep: valStep,
				lr: r.LR, gradNorm: r.GradNorm,
				tokPerS: float64(tokens) / el, budgetFrac: -1, eta: meter.eta(r.Step, steps),
				elapsed: time.Duration(el * float64(time.Second)),
			}))
		}
		res.TrainLoss = smooth
	}
	res.Steps = tr.StepsDone() - first
	res.WallS = time.Since(start).Seconds()
	res.TokensPerS = float64(tokens) / res.WallS
	v, err := tr.EvalLoss(ctx, 0)
	if err != nil {
		return res, err
	}
	res.ValLoss = v
	fmt.Fprintf(logw, "step %5d  val %.4f (all windows: the whole validation split)\n", tr.StepsDone(), v)
	return res, nil
}
