package isoflop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/modcoord/modcoord/atomicfile"
	"github.com/modcoord/modcoord/mod"
)

// Options configure a sweep.
type Options struct {
	Budgets  []float64
	Shapes   []Shape
	Variants []Variant
	Seeds    int // seeds 1..Seeds of every run; 0 means 1
	SeqLen   int
	Batch    int
	Schedule Schedule
	// Timing is the interleaved timing of each budget's best runs after
	// the sweep; the zero value skips it.
	Timing   Timing
	OutDir   string
	Progress io.Writer // per-run progress; nil discards it
	// TablesOnly trains nothing: it writes the tables, plot and summary of
	// the planned runs already finished in OutDir's runs/, to look at a
	// sweep run in pieces between pieces.
	TablesOnly bool
	// Now is the clock of the wall-clock fields; nil is time.Now. Tests
	// stop it to compare whole output files byte for byte.
	Now func() time.Time
}

func (o Options) seeds() int { return max(1, o.Seeds) }

// Output file names inside Options.OutDir.
const (
	RunsCSV     = "runs.csv"
	RunsJSON    = "runs.json"
	PlotPNG     = "isoflop.png"
	SummaryMD   = "summary.md"
	defaultPerm = 0o755
)

// Paths are the files a sweep wrote.
type Paths struct {
	CSV     string `json:"csv"`
	JSON    string `json:"json"`
	Plot    string `json:"plot"`
	Summary string `json:"summary"`
}

// pathsIn names the output files in dir.
func pathsIn(dir string) Paths {
	return Paths{
		CSV: filepath.Join(dir, RunsCSV), JSON: filepath.Join(dir, RunsJSON),
		Plot: filepath.Join(dir, PlotPNG), Summary: filepath.Join(dir, SummaryMD),
	}
}

// Report is what a sweep produced: every finished run, the best per variant
// per budget, and where the files are.
type Report struct {
	Budgets []float64 `json:"budgets"`
	Runs    []Result  `json:"-"`
	NumRuns int       `json:"runs"`
	// Resumed is how many of the runs were finished by an earlier sweep
	// into the same directory and read back instead of trained.
	Resumed int          `json:"resumed"`
	Skipped []string     `json:"skipped,omitempty"`
	Best    []BudgetBest `json:"best"`
	Paths   Paths        `json:"paths"`
	WallS   float64      `json:"wall_s"`
}

// Sweep trains every planned run in turn, skipping those an earlier sweep
// into the same directory finished (see RunsDir). Each finished run is
// saved to its own file, and runs.csv and runs.json are rewritten
// atomically, so that an interrupted or crashed sweep keeps every finished
// run; at the end, or when ctx is cancelled, it draws the plot and the
// summary from the runs finished so far. Tables list runs in plan order
// whichever sweep trained them, so a sweep run in pieces writes the same
// tables as one run at once. A cancelled sweep returns its partial report
// together with the context's error.
func Sweep(ctx context.Context, ds *mod.Dataset, opt Options) (Report, error) {
	progress := opt.Progress
	if progress == nil {
		progress = io.Discard
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}
	rep := Report{Budgets: opt.Budgets, Paths: pathsIn(opt.OutDir)}
	runs, skipped, err := Plan(opt.Budgets, opt.Shapes, opt.Variants, opt.seeds(), opt.SeqLen, opt.Batch)
	if err != nil {
		return rep, err
	}
	if err := ds.CheckSeqLen(opt.SeqLen); err != nil {
		return rep, fmt.Errorf("--seq-len %d: %w", opt.SeqLen, err)
	}
	for _, s := range skipped {
		rep.Skipped = append(rep.Skipped, s.ID())
		fmt.Fprintf(progress, "skip %s: one step costs %.3g FLOPs, more than the budget\n", s.ID(), s.FLOPsPerStep)
	}
	if err := os.MkdirAll(filepath.Join(opt.OutDir, RunsDir), defaultPerm); err != nil {
		return rep, fmt.Errorf("--out %s: %w", opt.OutDir, err)
	}

	// Read back what an earlier sweep finished before training anything, so
	// that a file from a sweep with other flags stops this one at once.
	done := make([]*Result, len(runs))
	for i, spec := range runs {
		r, ok, err := loadRun(opt.OutDir, spec)
		if err != nil {
			return rep, err
		}
		if ok {
			done[i] = &r
			rep.Resumed++
		}
	}
	switch {
	case opt.TablesOnly:
		fmt.Fprintf(progress, "tables only: %d of %d runs finished in %s; training none\n",
			rep.Resumed, len(runs), filepath.Join(opt.OutDir, RunsDir))
	case rep.Resumed > 0:
		fmt.Fprintf(progress, "resume: %d of %d runs already finished in %s; training the other %d\n",
			rep.Resumed, len(runs), filepath.Join(opt.OutDir, RunsDir), len(runs)-rep.Resumed)
	}
	finished := func() []Result {
		var out []Result
		for _, r := range done {
			if r != nil {
				out = append(out, *r)
			}
		}
		return out
	}

	start := now()
	var runErr error
	for i, spec := range runs {
		if done[i] != nil || opt.TablesOnly {
			continue
		}
		fmt.Fprintf(progress, "[%d/%d] %s  %s  params %d  %d steps × %.3g FLOPs\n",
			i+1, len(runs), spec.ID(), spec.Model, mod.NewLayout(spec.Model).Total, spec.Steps, spec.FLOPsPerStep)
		res, err := Train(ctx, ds, spec, opt.Schedule, progress, now)
		if err != nil {
			runErr = err
			break
		}
		fmt.Fprintf(progress, "[%d/%d] %s  val loss %.4f  train %.1fs (%.4f s/step)  eval %.1fs  sweep %.0fs\n",
			i+1, len(runs), spec.ID(), res.ValLoss, res.WallS, res.StepS, res.EvalS, now().Sub(start).Seconds())
		if err := saveRun(opt.OutDir, spec, res); err != nil {
			return rep, err
		}
		done[i] = &res
		rep.Runs = finished()
		if err := writeRuns(rep.Paths, rep.Runs); err != nil {
			return rep, err
		}
	}
	rep.Runs = finished()
	rep.WallS = now().Sub(start).Seconds()
	rep.NumRuns = len(rep.Runs)
	rep.Best = Best(rep.Runs)
	if runErr == nil && !opt.TablesOnly {
		if err := TimeBest(ctx, ds, rep.Best, opt); err != nil {
			runErr = err
		}
	}
	if err := writeReports(rep.Paths, rep.Runs, rep.Best, len(skipped)); err != nil {
		return rep, errors.Join(runErr, err)
	}
	return rep, runErr
}

// Retime re-reads a finished sweep's runs.json from opt.OutDir, times its
// best runs (opt.Timing) and rewrites summary.md (and isoflop.png, which
// does not depend on the timings), without training anything: for
// re-measuring step times on a quieter machine.
func Retime(ctx context.Context, ds *mod.Dataset, opt Options) (Report, error) {
	rep := Report{Paths: pathsIn(opt.OutDir)}
	runs, err := ReadJSON(rep.Paths.JSON)
	if err != nil {
		return rep, fmt.Errorf("retime: %w", err)
	}
	if len(runs) == 0 {
		return rep, fmt.Errorf("retime: %s has no runs; run the sweep first", rep.Paths.JSON)
	}
	start := time.Now()
	rep.Runs, rep.NumRuns = runs, len(runs)
	rep.Best = Best(runs)
	for _, bb := range rep.Best {
		rep.Budgets = append(rep.Budgets, bb.Budget)
	}
	if err := TimeBest(ctx, ds, rep.Best, opt); err != nil {
		return rep, err
	}
	rep.WallS = time.Since(start).Seconds()
	// runs.csv and runs.json are left as the sweep wrote them. The count of
	// skipped runs is not in runs.json, so summary.md loses that line.
	return rep, writeSummaryAndPlot(rep.Paths, rep.Runs, rep.Best, 0)
}

// writeRuns rewrites runs.csv and runs.json with every finished run; it is
// called after each run, so it also writes an empty set before the first.
func writeRuns(p Paths, runs []Result) error {
	if err := atomicfile.Write(p.CSV, 0o644, func(w io.Writer) error { return WriteCSV(w, runs) }); err != nil {
		return err
	}
	return atomicfile.Write(p.JSON, 0o644, func(w io.Writer) error { return WriteJSON(w, runs) })
}

// writeReports writes runs.csv/json (again, so that a sweep with no
// finished run still leaves them), summary.md and, when there is a run to
// draw, isoflop.png.
func writeReports(p Paths, runs []Result, best []BudgetBest, skipped int) error {
	if err := writeRuns(p, runs); err != nil {
		return err
	}
	return writeSummaryAndPlot(p, runs, best, skipped)
}

// writeSummaryAndPlot writes summary.md and, when there is a run to draw,
// isoflop.png.
func writeSummaryAndPlot(p Paths, runs []Result, best []BudgetBest, skipped int) error {
	if err := atomicfile.Write(p.Summary, 0o644, func(w io.Writer) error { return WriteSummary(w, best, runs, skipped) }); err != nil {
		return err
	}
	if len(runs) == 0 {
		return nil
	}
	return atomicfile.Write(p.Plot, 0o644, func(w io.Writer) error { return WritePlot(w, runs) })
}
