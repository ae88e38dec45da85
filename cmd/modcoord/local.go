package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/local"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// localResult is the summary `local --json` prints.
type localResult struct {
	Job        string    `json:"job"`
	Steps      int64     `json:"steps"`
	ValLoss    float64   `json:"val_loss"`
	FLOPs      float64   `json:"flops"`
	WallS      float64   `json:"wall_s"`
	Workers    int       `json:"workers"`
	TokensPerS float64   `json:"tokens_per_s"`
	Checkpoint string    `json:"checkpoint"`
	Sample     string    `json:"sample"`
	Losses     []float64 `json:"losses,omitempty"`
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

func cmdLocal(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	workers := fs.Int("workers", 2, "workers in the cluster")
	data := fs.String("data", "data/tinyshakespeare.txt", "training corpus")
	specPath := fs.String("job", "", "job spec (YAML or JSON) to run instead of the default one")
	steps := fs.Int64("steps", 600, "steps of the default job (its FLOP budget buys exactly this many)")
	dir := fs.String("dir", "", "state directory for raft, etcd and checkpoints (default: a temporary one, removed at exit)")
	verbose := fs.Bool("v", false, "log the cluster's components to stderr")
	jsonOut := fs.Bool("json", false, "print a JSON summary as the last line of stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *workers < 1 || *workers > 64 {
		return fmt.Errorf("--workers %d: use 1..64", *workers)
	}
	var spec []byte
	var err error
	if *specPath != "" {
		if spec, err = os.ReadFile(*specPath); err != nil {
			return fmt.Errorf("read job spec: %w", err)
		}
	} else {
		if *steps < 1 {
			return fmt.Errorf("--steps %d: need at least 1", *steps)
		}
		if spec, err = yaml.Marshal(defaultJobSpec(*data, *workers, *steps)); err != nil {
			return err
		}
	}
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "modcoord-local-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*dir = tmp
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	fmt.Fprintf(os.Stderr, "starting nats-server, etcd, 3 coordinators and %d workers (state in %s; BLAS: %s)\n", *workers, *dir, mod.BLASEngine())
	cl, err := local.Start(ctx, local.Options{Dir: *dir, Workers: *workers, Log: logger})
	if err != nil {
		return err
	}
	defer cl.Close()

	start := time.Now()
	sub, err := cl.Client.Submit(ctx, spec)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "submitted job %s: %d steps of %.3g FLOPs (budget %.3g)\n", sub.ID, sub.Steps, sub.FLOPsPerStep, sub.BudgetFLOPs)
	job, err := watchJob(ctx, cl.Client, sub.ID, os.Stderr)
	if err != nil {
		return err
	}
	wall := time.Since(start).Seconds()
	if job.Status != coordinator.StatusCompleted {
		return fmt.Errorf("job %s ended %s: %s", job.ID, job.Status, job.Reason)
	}

	// Evaluate and sample from the final committed checkpoint.
	ck, err := openCheckpoint(ctx, filepath.Join(cl.CheckpointDir(), job.ID))
	if err != nil {
		return err
	}
	params, err := ck.LoadParams(ctx)
	if err != nil {
		return err
	}
	res := localResult{Job: job.ID, Steps: job.Ledger.StepsDone, FLOPs: job.Ledger.FLOPsUsed, WallS: wall,
		Workers: len(job.Members), Checkpoint: ck.Dir}
	if res.Workers == 0 {
		res.Workers = *workers
	}
	res.TokensPerS = float64(res.Steps) * float64(job.Spec.Batch*job.Spec.Model.SeqLen) / wall
	for _, p := range job.Recent {
		res.Losses = append(res.Losses, p.Loss)
	}
	if err := evalAndSample(ctx, ck, params, job.Spec.Data, &res); err != nil {
		return err
	}
	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("\n%s\n\njob %s: %d steps on %d workers, val loss %.4f, %.3g FLOPs, %.1f s, %.0f tokens/s\ncheckpoint %s\n",
		res.Sample, res.Job, res.Steps, res.Workers, res.ValLoss, res.FLOPs, res.WallS, res.TokensPerS, res.Checkpoint)
	return nil
}

func evalAndSample(ctx context.Context, ck *train.Opened, params []float32, data string, res *localResult) error {
	cfg := ck.Config.Model
	ds, err := mod.LoadDataset(data)
	if err != nil {
		return err
	}
	eval, err := mod.NewParallelWithParams(cfg, 16, 0, params)
	if err != nil {
		return err
	}
	defer eval.Close()
	if res.ValLoss, err = mod.EvalLoss(eval, ds, 0); err != nil {
		return err
	}
	prompt := []byte("ROMEO:\n")
	n := min(200, cfg.SeqLen-len(prompt))
	texts, _, err := generate(ctx, cfg, params, prompt, n, 1, 0.8, 0, 1)
	if err != nil {
		return err
	}
	res.Sample = string(prompt) + texts[0]
	return nil
}

// watchJob polls a job until it ends, drawing progress on w.
func watchJob(ctx context.Context, c *coordinator.Client, id string, w io.Writer) (coordinator.Job, error) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	bar := newProgressBar(w)
	for {
		job, err := c.Job(ctx, id)
		if err != nil {
			return job, err
		}
		bar.draw(job)
		switch job.Status {
		case coordinator.StatusCompleted, coordinator.StatusCanceled, coordinator.StatusFailed:
			bar.done()
			return job, nil
		}
		select {
		case <-ctx.Done():
			bar.done()
			return job, ctx.Err()
		case <-tick.C:
		}
	}
}
