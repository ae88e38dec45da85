package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/modcoord/modcoord/isoflop"
	"github.com/modcoord/modcoord/mod"
)

// cmdIsoflop runs the isoFLOP comparison of dense and MoD models (issue 8).
func cmdIsoflop(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("isoflop", flag.ContinueOnError)
	data := fs.String("data", "data/tinyshakespeare.txt", "training corpus (any file; bytes are tokens)")
	budgets := fs.String("budgets", isoflop.DefaultBudgets, "comma-separated training-FLOP budgets; every size of every variant is trained to each (CI uses "+isoflop.CIBudget+")")
	shapes := fs.String("shapes", isoflop.DefaultShapesFlag(), "comma-separated model sizes, d_model x layers x heads")
	out := fs.String("out", "runs/isoflop", "directory for runs.csv, runs.json, isoflop.png and summary.md")
	batch := fs.Int("batch", 16, "sequences per training step")
	seqLen := fs.Int("seq-len", 128, "tokens per sequence")
	jsonOut := fs.Bool("json", false, "print a JSON summary as the last line of stdout")
	timingRounds := fs.Int("timing-rounds", isoflop.DefaultTiming().Rounds, "after the sweep, time each budget's best runs in turn this many rounds, for step-time ratios under equal load (0: skip)")
	timingSteps := fs.Int("timing-steps", isoflop.DefaultTiming().Steps, "timed steps per model per timing round")
	retime := fs.Bool("retime", false, "train nothing: read --out's runs.json, time its best runs and rewrite summary.md and isoflop.png")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	bs, err := isoflop.ParseBudgets(*budgets)
	if err != nil {
		return err
	}
	ss, err := isoflop.ParseShapes(*shapes)
	if err != nil {
		return err
	}
	if *batch < 1 {
		return fmt.Errorf("--batch %d: need at least 1 sequence per step", *batch)
	}
	if *seqLen < 2 {
		return fmt.Errorf("--seq-len %d: need at least 2 tokens so that MoD has a choice to make", *seqLen)
	}
	if *timingRounds < 0 || *timingSteps < 1 {
		return fmt.Errorf("--timing-rounds %d, --timing-steps %d: need rounds ≥ 0 and steps ≥ 1", *timingRounds, *timingSteps)
	}
	opt := isoflop.Options{
		Budgets: bs, Shapes: ss, Variants: isoflop.DefaultVariants(),
		SeqLen: *seqLen, Batch: *batch, Schedule: isoflop.DefaultSchedule(),
		Timing: isoflop.Timing{Rounds: *timingRounds, Steps: *timingSteps},
		OutDir: *out, Progress: os.Stderr,
	}
	if *retime {
		if opt.Timing.Rounds < 1 {
			return fmt.Errorf("--retime with --timing-rounds 0 would do nothing; give at least 1 round")
		}
		ds, err := mod.LoadDataset(*data)
		if err != nil {
			return fmt.Errorf("--data %s: %w", *data, err)
		}
		rep, err := isoflop.Retime(ctx, ds, opt)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "isoflop: timed the best runs of %d budgets in %.0fs; wrote %s, %s\n", len(rep.Best), rep.WallS, rep.Paths.Summary, rep.Paths.Plot)
		return printIsoflopReport(rep, *jsonOut)
	}
	// Plan before loading the corpus so that a bad budget is reported at once.
	if _, _, err := isoflop.Plan(opt.Budgets, opt.Shapes, opt.Variants, opt.SeqLen, opt.Batch); err != nil {
		return err
	}
	ds, err := mod.LoadDataset(*data)
	if err != nil {
		return fmt.Errorf("--data %s: %w", *data, err)
	}
	fmt.Fprintf(os.Stderr, "isoflop: budgets %v, %d shapes × %d variants, batch %d, seq_len %d, blas %s\n",
		bs, len(ss), len(opt.Variants), *batch, *seqLen, mod.BLASEngine())
	rep, err := isoflop.Sweep(ctx, ds, opt)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(os.Stderr, "isoflop: interrupted; %d finished runs kept in %s\n", rep.NumRuns, rep.Paths.CSV)
		}
		return err
	}
	fmt.Fprintf(os.Stderr, "isoflop: %d runs in %.0fs; wrote %s, %s, %s, %s\n",
		rep.NumRuns, rep.WallS, rep.Paths.CSV, rep.Paths.JSON, rep.Paths.Plot, rep.Paths.Summary)
	return printIsoflopReport(rep, *jsonOut)
}

// printIsoflopReport prints the report as JSON, or summary.md as text.
func printIsoflopReport(rep isoflop.Report, jsonOut bool) error {
	if jsonOut {
		return json.NewEncoder(os.Stdout).Encode(rep)
	}
	summary, err := os.ReadFile(rep.Paths.Summary)
	if err != nil {
		return fmt.Errorf("read back summary: %w", err)
	}
	_, err = os.Stdout.Write(summary)
	return err
}
