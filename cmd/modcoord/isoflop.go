package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/isoflop"
	"github.com/modcoord/modcoord/mod"
)

type isoflopOptions struct {
	data, budgets, shapes, out  string
	variants                    string
	batch, seqLen, timingRounds int
	timingSteps, seeds          int
	jsonOut, retime, tablesOnly bool
}

// newIsoflopCmd runs the isoFLOP comparison of dense and MoD models (issue 8).
func newIsoflopCmd(e env) *cobra.Command {
	var o isoflopOptions
	cmd := &cobra.Command{
		Use:   "isoflop",
		Short: "Train dense and MoD models to equal FLOP budgets and compare",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runIsoflop(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	fs := cmd.Flags()
	addDataFlag(fs, &o.data, "training corpus (any file; bytes are tokens)")
	fs.StringVar(&o.budgets, "budgets", isoflop.DefaultBudgets, "comma-separated training-FLOP budgets; every size of every variant is trained to each (CI uses "+isoflop.CIBudget+")")
	fs.StringVar(&o.shapes, "shapes", isoflop.DefaultShapesFlag(), "comma-separated model sizes, d_model x layers x heads")
	fs.StringVar(&o.variants, "variants", isoflop.DefaultVariantsFlag, "comma-separated variants: dense, mod-c<C> (learned routing on every other layer), random-c<C> (k random tokens, the control), with -every for routing every layer (e.g. mod-c0.125-every) and, for mod, -predictor after it for the stop-gradient predictor decision instead of the aux loss (e.g. mod-c0.125-predictor)")
	fs.IntVar(&o.seeds, "seeds", 1, "train every run with seeds 1..K (initialisation and data order); tables give mean ± std over seeds")
	fs.StringVar(&o.out, "out", "runs/isoflop", "directory for runs.csv, runs.json, isoflop.png, summary.md and runs/ (one file per finished run: a sweep rerun with the same --out resumes, skipping them)")
	fs.IntVar(&o.batch, "batch", 16, "sequences per training step")
	fs.IntVar(&o.seqLen, "seq-len", 128, "tokens per sequence")
	addJSONFlag(cmd, &o.jsonOut)
	fs.IntVar(&o.timingRounds, "timing-rounds", isoflop.DefaultTiming().Rounds, "after the sweep, time each budget's best runs in turn this many rounds, for step-time ratios under equal load (0: skip)")
	fs.IntVar(&o.timingSteps, "timing-steps", isoflop.DefaultTiming().Steps, "timed steps per model per timing round")
	fs.BoolVar(&o.tablesOnly, "tables-only", false, "train nothing: write runs.csv, runs.json, isoflop.png and summary.md from the runs of this plan already finished in --out's runs/ (a sweep run in pieces, between pieces)")
	fs.BoolVar(&o.retime, "retime", false, "train nothing: read --out's runs.json, time its best runs and rewrite summary.md and isoflop.png")
	return cmd
}

func runIsoflop(ctx context.Context, stdout, stderr io.Writer, o isoflopOptions) error {
	bs, err := isoflop.ParseBudgets(o.budgets)
	if err != nil {
		return &usageError{fmt.Errorf("--budgets: %w", err)}
	}
	ss, err := isoflop.ParseShapes(o.shapes)
	if err != nil {
		return &usageError{fmt.Errorf("--shapes: %w", err)}
	}
	vs, err := isoflop.ParseVariants(o.variants)
	if err != nil {
		return &usageError{err}
	}
	if o.seeds < 1 || o.seeds > isoflop.MaxSeeds {
		return usageErrorf("--seeds %d: use 1..%d", o.seeds, isoflop.MaxSeeds)
	}
	if o.batch < 1 {
		return usageErrorf("--batch %d: need at least 1 sequence per step", o.batch)
	}
	if o.seqLen < 2 {
		return usageErrorf("--seq-len %d: need at least 2 tokens so that MoD has a choice to make", o.seqLen)
	}
	if o.timingRounds < 0 || o.timingSteps < 1 {
		return usageErrorf("--timing-rounds %d, --timing-steps %d: need rounds ≥ 0 and steps ≥ 1", o.timingRounds, o.timingSteps)
	}
	opt := isoflop.Options{
		Budgets: bs, Shapes: ss, Variants: vs, Seeds: o.seeds,
		SeqLen: o.seqLen, Batch: o.batch, Schedule: isoflop.DefaultSchedule(),
		Timing: isoflop.Timing{Rounds: o.timingRounds, Steps: o.timingSteps},
		OutDir: o.out, Progress: stderr, TablesOnly: o.tablesOnly,
	}
	if o.retime {
		if opt.Timing.Rounds < 1 {
			return usageErrorf("--retime with --timing-rounds 0 would do nothing; give at least 1 round")
		}
		ds, err := mod.LoadDataset(o.data)
		if err != nil {
			return fmt.Errorf("--data %s: %w", o.data, err)
		}
		rep, err := isoflop.Retime(ctx, ds, opt)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "isoflop: timed the best runs of %d budgets in %.0fs; wrote %s, %s\n", len(rep.Best), rep.WallS, rep.Paths.Summary, rep.Paths.Plot)
		return printIsoflopReport(stdout, rep, o.jsonOut)
	}
	// Plan before loading the corpus so that a bad budget is reported at once.
	if _, _, err := isoflop.Plan(opt.Budgets, opt.Shapes, opt.Variants, opt.Seeds, opt.SeqLen, opt.Batch); err != nil {
		return &usageError{err}
	}
	ds, err := mod.LoadDataset(o.data)
	if err != nil {
		return fmt.Errorf("--data %s: %w", o.data, err)
	}
	fmt.Fprintf(stderr, "isoflop: budgets %v, %d shapes × %d variants × %d seeds, batch %d, seq_len %d, blas %s\n",
		bs, len(ss), len(opt.Variants), opt.Seeds, o.batch, o.seqLen, mod.BLASEngine())
	rep, err := isoflop.Sweep(ctx, ds, opt)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "isoflop: interrupted; %d finished runs kept in %s; run the same command again to resume\n", rep.NumRuns, rep.Paths.CSV)
		}
		return err
	}
	fmt.Fprintf(stderr, "isoflop: %d runs (%d resumed from an earlier sweep) in %.0fs; wrote %s, %s, %s, %s\n",
		rep.NumRuns, rep.Resumed, rep.WallS, rep.Paths.CSV, rep.Paths.JSON, rep.Paths.Plot, rep.Paths.Summary)
	return printIsoflopReport(stdout, rep, o.jsonOut)
}

// printIsoflopReport prints the report as JSON, or summary.md as text.
func printIsoflopReport(stdout io.Writer, rep isoflop.Report, jsonOut bool) error {
	if jsonOut {
		return writeJSON(stdout, rep)
	}
	summary, err := os.ReadFile(rep.Paths.Summary)
	if err != nil {
		return fmt.Errorf("read back summary: %w", err)
	}
	_, err = stdout.Write(summary)
	return err
}
