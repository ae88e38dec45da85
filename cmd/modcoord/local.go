package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/local"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/tokenizer"
	"github.com/modcoord/modcoord/train"
)

// localResult is the summary `local --json` prints.
type localResult struct {
	Job     string  `json:"job"`
	Steps   int64   `json:"steps"`
	ValLoss float64 `json:"val_loss"` // the final checkpoint, on the whole validation split
	// ClusterValLoss is the last validation loss the cluster's ranks
	// reported (on the spec's eval_windows windows), after ClusterValStep.
	ClusterValLoss *float64  `json:"cluster_val_loss,omitempty"`
	ClusterValStep int64     `json:"cluster_val_step,omitempty"`
	FLOPs          float64   `json:"flops"`
	WallS          float64   `json:"wall_s"`
	Workers        int       `json:"workers"`
	TokensPerS     float64   `json:"tokens_per_s"`
	Checkpoint     string    `json:"checkpoint"`
	Sample         string    `json:"sample"`
	Losses         []float64 `json:"losses,omitempty"`
}

// defaultJobSpec is the job `modcoord local` runs when given no spec.
func defaultJobSpec(data string, workers int, steps int64) coordinator.JobSpec {
	t := defaultTrainSpec()
	return coordinator.JobSpec{
		Name: "shakespeare-mod", Data: data, Model: t.Model, Optim: t.Optim, Batch: t.Batch,
		BudgetFLOPs: float64(steps) * t.Model.TrainFLOPs(t.Batch).Total(),
		MinWorkers:  1, MaxWorkers: workers, CheckpointEvery: 250, KeepCheckpoints: 3, Seed: t.Seed,
	}
}

type localOptions struct {
	workers                  int
	data, dataRoot, job, dir string
	steps                    int64
	verbose, jsonOut         bool
}

func newLocalCmd(e env) *cobra.Command {
	var o localOptions
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Run a whole cluster in this process and train the default job",
		Long: `Run nats-server, etcd, 3 coordinators and --workers workers in this process,
train the default job (or --job), then evaluate and sample from its final
checkpoint. Progress is the same line watch prints. Exits 3 if the job fails
or is canceled.`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLocal(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&o.workers, "workers", 2, "workers in the cluster")
	addDataFlag(fs, &o.data, "training corpus")
	fs.StringVar(&o.job, "job", "", "job spec (YAML or JSON) to run instead of the default one")
	fs.StringVar(&o.dataRoot, "data-root", "", "the workers' data root, which a --job spec's data path is relative to (default: the working directory; for the default job, --data's directory)")
	fs.Int64Var(&o.steps, "steps", 600, "steps of the default job (its FLOP budget buys exactly this many)")
	fs.StringVar(&o.dir, "dir", "", "state directory for raft, etcd and checkpoints (default: a temporary one, removed at exit)")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "log the cluster's components to stderr")
	addJSONFlag(cmd, &o.jsonOut)
	return cmd
}

func runLocal(ctx context.Context, stdout, stderr io.Writer, o localOptions) error {
	if o.workers < 1 || o.workers > 64 {
		return usageErrorf("--workers %d: use 1..64", o.workers)
	}
	var spec []byte
	var err error
	if o.job != "" {
		if spec, err = os.ReadFile(o.job); err != nil {
			return fmt.Errorf("read job spec: %w", err)
		}
	} else {
		if o.steps < 1 {
			return usageErrorf("--steps %d: need at least 1", o.steps)
		}
		// The workers read only under their data root: the default job
		// names the corpus relative to its own directory.
		rel := filepath.Base(o.data)
		if o.dataRoot == "" {
			o.dataRoot = filepath.Dir(o.data)
		} else if rel, err = filepath.Rel(o.dataRoot, o.data); err != nil {
			return usageErrorf("--data %s is not under --data-root %s", o.data, o.dataRoot)
		}
		if spec, err = yaml.Marshal(defaultJobSpec(rel, o.workers, o.steps)); err != nil {
			return err
		}
	}
	if o.dataRoot == "" {
		o.dataRoot = "."
	}
	if o.dir == "" {
		tmp, err := os.MkdirTemp("", "modcoord-local-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		o.dir = tmp
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.verbose {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	fmt.Fprintf(stderr, "starting nats-server, etcd, 3 coordinators and %d workers (state in %s; BLAS: %s)\n", o.workers, o.dir, mod.BLASEngine())
	cl, err := local.Start(ctx, local.Options{Dir: o.dir, DataRoot: o.dataRoot, Workers: o.workers, Log: logger})
	if err != nil {
		return fmt.Errorf("start local cluster: %w", err)
	}
	defer cl.Close()

	start := time.Now()
	sub, err := cl.Client.Submit(ctx, spec)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	fmt.Fprintf(stderr, "submitted job %s: %d steps of %.3g FLOPs (budget %.3g)\n", sub.ID, sub.Steps, sub.FLOPsPerStep, sub.BudgetFLOPs)
	job, err := watchJob(ctx, cl.Client, sub.ID, 500*time.Millisecond, newProgressBar(stderr))
	if err != nil {
		return err
	}
	wall := time.Since(start).Seconds()
	if job.Status != coordinator.StatusCompleted {
		return &jobEndedError{id: job.ID, reason: job.Reason}
	}

	// Evaluate and sample from the final committed checkpoint.
	ck, err := openCheckpoint(ctx, stderr, filepath.Join(cl.CheckpointDir(), job.ID))
	if err != nil {
		return err
	}
	params, err := ck.LoadParams(ctx)
	if err != nil {
		return fmt.Errorf("load %s: %w", ck.Dir, err)
	}
	res := localResult{Job: job.ID, Steps: job.Ledger.StepsDone, FLOPs: job.Ledger.FLOPsUsed, WallS: wall,
		Workers: len(job.Members), Checkpoint: ck.Dir}
	if res.Workers == 0 {
		res.Workers = o.workers
	}
	res.TokensPerS = float64(res.Steps) * float64(job.Spec.Batch*job.Spec.Model.SeqLen) / wall
	for _, p := range job.Recent {
		res.Losses = append(res.Losses, p.Loss)
	}
	if v, ok := job.LastVal(); ok {
		res.ClusterValLoss, res.ClusterValStep = &v.Loss, v.Step
	}
	if err := evalAndSample(ctx, ck, params, job.Spec, o.dataRoot, &res); err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, res)
	}
	cluster := ""
	if res.ClusterValLoss != nil {
		cluster = fmt.Sprintf(" (the cluster measured val %.4f on %d windows at step %d)", *res.ClusterValLoss, job.Spec.EvalWindows, res.ClusterValStep)
	}
	fmt.Fprintf(stdout, "\n%s\n\njob %s: %d steps on %d workers, val loss %.4f over the whole validation split%s, %.3g FLOPs, %.1f s, %.0f tokens/s\ncheckpoint %s\n",
		res.Sample, res.Job, res.Steps, res.Workers, res.ValLoss, cluster, res.FLOPs, res.WallS, res.TokensPerS, res.Checkpoint)
	return nil
}

func evalAndSample(ctx context.Context, ck *train.Opened, params []float32, spec coordinator.JobSpec, dataRoot string, res *localResult) error {
	cfg := ck.Config.Model
	ds, err := spec.OpenCorpus(dataRoot)
	if err != nil {
		return err
	}
	defer ds.Close()
	tok, err := tokenizer.New(ck.Config.TokenizerName())
	if err != nil {
		return err
	}
	eval, err := mod.NewParallelWithParams(cfg, train.EvalBatch, 0, params)
	if err != nil {
		return err
	}
	defer eval.Close()
	if res.ValLoss, err = mod.EvalLoss(eval, ds, 0); err != nil {
		return err
	}
	prompt := []byte("ROMEO:\n")
	n := min(200, cfg.SeqLen-len(tok.Encode(prompt)))
	texts, _, err := generateWith(ctx, tok, cfg, params, prompt, n, 1, 0.8, 0, 1)
	if err != nil {
		return err
	}
	res.Sample = string(prompt) + texts[0]
	return nil
}
