package isoflop

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

// tinyCorpus is a few kilobytes of varied text: enough windows of tinySeq
// tokens to train and validate on, small enough that a sweep takes seconds.
func tinyCorpus(t *testing.T) *mod.Dataset {
	t.Helper()
	var b strings.Builder
	for i := 0; b.Len() < 12000; i++ {
		b.WriteString("To be, or not to be, that is the question " + strconv.Itoa(i*7919%1000) + ".\n")
	}
	ds, err := mod.NewDataset([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

const (
	tinySeq   = 16
	tinyBatch = 4
)

func tinyShapes() []Shape {
	return []Shape{{DModel: 16, Layers: 2, Heads: 2}, {DModel: 24, Layers: 2, Heads: 2}, {DModel: 32, Layers: 4, Heads: 2}}
}

func tinyOptions(t *testing.T, budgets ...float64) Options {
	return Options{
		Budgets: budgets, Shapes: tinyShapes(), Variants: DefaultVariants(),
		SeqLen: tinySeq, Batch: tinyBatch, Schedule: DefaultSchedule(), OutDir: t.TempDir(),
	}
}

// TestSweepPipeline runs a whole tiny sweep and checks what it writes: it
// tests the plumbing (budgets honoured, files complete and parseable), not
// whether MoD wins.
func TestSweepPipeline(t *testing.T) {
	ds := tinyCorpus(t)
	largest := ModelConfig(tinyShapes()[2], DefaultVariants()[0], tinySeq, 1).TrainFLOPs(tinyBatch).Total()
	budgets := []float64{6 * largest, 13.5 * largest}
	opt := tinyOptions(t, budgets...)
	opt.Timing = Timing{Rounds: 2, Steps: 2}
	rep, err := Sweep(context.Background(), ds, opt)
	if err != nil {
		t.Fatal(err)
	}

	want := len(budgets) * len(opt.Shapes) * len(opt.Variants)
	if rep.NumRuns != want || len(rep.Runs) != want {
		t.Fatalf("%d runs, want %d (budgets × shapes × variants)", rep.NumRuns, want)
	}
	seen := map[string]bool{}
	for _, r := range rep.Runs {
		key := strconv.FormatFloat(r.Budget, 'g', -1, 64) + "/" + r.Variant + "/" + r.Shape
		if seen[key] {
			t.Errorf("run %s appears twice", key)
		}
		seen[key] = true
		if wantSteps := int(math.Floor(r.Budget / r.StepFLOPs)); r.Steps != wantSteps {
			t.Errorf("%s: %d steps, want floor(budget/flops_per_step) = %d", key, r.Steps, wantSteps)
		}
		if r.FLOPs > r.Budget || r.FLOPs <= r.Budget-r.StepFLOPs {
			t.Errorf("%s: used %.6g FLOPs of budget %.6g (one step %.6g): want within one step under budget", key, r.FLOPs, r.Budget, r.StepFLOPs)
		}
		if !(r.ValLoss > 0) || math.IsInf(r.ValLoss, 0) || r.ValWindows != ds.ValWindows(tinySeq) {
			t.Errorf("%s: val loss %v over %d windows, want finite over all %d", key, r.ValLoss, r.ValWindows, ds.ValWindows(tinySeq))
		}
		if !(r.ValLossCausal > 0) || (r.Variant == "dense" && r.ValLossCausal != r.ValLoss) {
			t.Errorf("%s: causal val loss %v (top-k %v): want finite, and equal for dense", key, r.ValLossCausal, r.ValLoss)
		}
		if r.Params <= 0 || r.ForwardFLOPs <= 0 || r.WallS <= 0 || r.StepS <= 0 {
			t.Errorf("%s: missing measurements: %+v", key, r)
		}
	}
	for _, b := range budgets {
		for _, s := range opt.Shapes {
			for _, v := range opt.Variants {
				if key := strconv.FormatFloat(b, 'g', -1, 64) + "/" + v.Name + "/" + s.String(); !seen[key] {
					t.Errorf("run %s is missing", key)
				}
			}
		}
	}

	checkCSV(t, rep.Paths.CSV, want)
	back, err := ReadJSON(rep.Paths.JSON)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != want || !reflect.DeepEqual(back[0], rep.Runs[0]) {
		t.Errorf("runs.json holds %d runs (first %+v), want %d (first %+v)", len(back), back[0], want, rep.Runs[0])
	}
	checkPNG(t, rep.Paths.Plot, len(budgets))
	if st, err := os.Stat(rep.Paths.CSV); err != nil {
		t.Error(err)
	} else if st.Mode().Perm() != 0o644 {
		t.Errorf("runs.csv mode %v, want 0644 so that others can read results", st.Mode().Perm())
	}
	checkSummary(t, rep.Paths.Summary, len(budgets)*len(opt.Variants))
	if len(rep.Best) != len(budgets) {
		t.Errorf("best runs for %d budgets, want %d", len(rep.Best), len(budgets))
	}
	for _, bb := range rep.Best {
		for _, v := range opt.Variants {
			if ts := bb.TimedStepS[v.Name]; !(ts > 0) {
				t.Errorf("budget %g: %s timed at %v s/step, want a positive interleaved timing", bb.Budget, v.Name, ts)
			}
		}
	}

	// Retime reads the same runs back and times them again, training nothing.
	again, err := Retime(context.Background(), ds, opt)
	if err != nil {
		t.Fatal(err)
	}
	if again.NumRuns != want || len(again.Best) != len(budgets) {
		t.Errorf("retime: %d runs, %d budgets; want %d and %d", again.NumRuns, len(again.Best), want, len(budgets))
	}
	for i, bb := range again.Best {
		if bb.Budget != rep.Best[i].Budget || len(bb.TimedStepS) != len(opt.Variants) {
			t.Errorf("retime: budget %g has timings %v, want one per variant", bb.Budget, bb.TimedStepS)
		}
	}
	checkSummary(t, rep.Paths.Summary, len(budgets)*len(opt.Variants))
	checkSummaryUsesTimings(t, again.Paths.Summary, again.Best)
}

// checkSummaryUsesTimings checks that every row's s/step is the
// interleaved timing, not the run's own median.
func checkSummaryUsesTimings(t *testing.T, path string, best []BudgetBest) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(bestTable(string(b)), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) > 3 {
			rows[strings.TrimSpace(cells[1])+"/"+strings.TrimSpace(cells[2])] = cells
		}
	}
	for _, bb := range best {
		for v, ts := range bb.TimedStepS {
			key := strconv.FormatFloat(bb.Budget, 'g', 3, 64) + "/" + v
			cells, ok := rows[key]
			if !ok {
				t.Errorf("summary.md has no row %s", key)
				continue
			}
			// The s/step column is the second to last cell before the trailing "|".
			if got, want := strings.TrimSpace(cells[len(cells)-3]), strconv.FormatFloat(ts, 'f', 4, 64); got != want {
				t.Errorf("summary.md row %s: s/step %s, want the interleaved timing %s", key, got, want)
			}
		}
	}
}

func TestRetimeNeedsRuns(t *testing.T) {
	opt := tinyOptions(t, 1e9)
	opt.Timing = Timing{Rounds: 1, Steps: 1}
	if _, err := Retime(context.Background(), tinyCorpus(t), opt); err == nil || !strings.Contains(err.Error(), "runs.json") {
		t.Errorf("Retime on an empty directory: error %v, want one naming runs.json", err)
	}
}

func checkCSV(t *testing.T, path string, rows int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("runs.csv does not parse: %v", err)
	}
	if len(recs) != rows+1 || strings.Join(recs[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("runs.csv: %d records with header %v, want header and %d rows", len(recs), recs[0], rows)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	for _, rec := range recs[1:] {
		if _, err := strconv.ParseFloat(rec[col["val_loss"]], 64); err != nil {
			t.Errorf("runs.csv: val_loss %q: %v", rec[col["val_loss"]], err)
		}
	}
}

func checkPNG(t *testing.T, path string, panels int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("isoflop.png does not decode: %v", err)
	}
	w, h := PlotSize(panels)
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Errorf("isoflop.png is %dx%d, want %dx%d for %d panels", b.Dx(), b.Dy(), w, h, panels)
	}
}

// bestTable is summary.md up to its first section: the best-shape table.
func bestTable(summary string) string {
	best, _, _ := strings.Cut(summary, "\n## ")
	return best
}

func checkSummary(t *testing.T, path string, rows int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tableRows int
	for _, line := range strings.Split(bestTable(string(b)), "\n") {
		if strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| budget") {
			tableRows++
			if cells := strings.Split(line, "|"); len(cells) != 16 {
				t.Errorf("summary row has %d cells, want 14: %q", len(cells)-2, line)
			}
		}
	}
	if tableRows != rows {
		t.Errorf("summary.md has %d table rows, want %d (budgets × variants):\n%s", tableRows, rows, b)
	}
}

// cancelAfter is a progress writer that cancels the sweep once n runs have
// reported their validation loss, the way Ctrl-C would mid-sweep.
type cancelAfter struct {
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("val loss")) {
		if c.n--; c.n == 0 {
			c.cancel()
		}
	}
	return len(p), nil
}

func TestSweepCancelKeepsFinishedRuns(t *testing.T) {
	ds := tinyCorpus(t)
	opt := tinyOptions(t, 4*ModelConfig(tinyShapes()[2], DefaultVariants()[0], tinySeq, 1).TrainFLOPs(tinyBatch).Total())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opt.Progress = &cancelAfter{n: 2, cancel: cancel}
	rep, err := Sweep(ctx, ds, opt)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if rep.NumRuns != 2 {
		t.Fatalf("%d runs kept, want the 2 finished before the cancel", rep.NumRuns)
	}
	checkCSV(t, rep.Paths.CSV, 2)
	checkPNG(t, rep.Paths.Plot, 1)
	leftovers, _ := filepath.Glob(filepath.Join(opt.OutDir, ".*tmp*"))
	if len(leftovers) > 0 {
		t.Errorf("temp files left behind: %v", leftovers)
	}
}

func TestParseBudgets(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []float64
		wantErr string
	}{
		{in: "3e11,1e12", want: []float64{3e11, 1e12}},
		{in: " 1e12 , 3e11,1e12", want: []float64{3e11, 1e12}},
		{in: "1000", want: []float64{1000}},
		{in: "", wantErr: "--budgets: no budget"},
		{in: "1e12,lots", wantErr: `--budgets: "lots"`},
		{in: "-5", wantErr: `--budgets: "-5"`},
		{in: "0", wantErr: `--budgets: "0"`},
		{in: "NaN", wantErr: `--budgets: "NaN"`},
		{in: "Inf", wantErr: `--budgets: "Inf"`},
	} {
		got, err := ParseBudgets(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseBudgets(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("ParseBudgets(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("ParseBudgets(%q) = %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}

func TestParseShapes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "32x2x2,64x4x4", want: "32x2x2,64x4x4"},
		{in: DefaultShapesFlag(), want: DefaultShapesFlag()},
		{in: "64x4", wantErr: true},
		{in: "64x0x4", wantErr: true},
		{in: "axbxc", wantErr: true},
		{in: " , ", wantErr: true},
	} {
		got, err := ParseShapes(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseShapes(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err != nil {
			if !strings.Contains(err.Error(), "--shapes") {
				t.Errorf("ParseShapes(%q) error %q does not name the flag", tc.in, err)
			}
			continue
		}
		if s := ShapesFlag(got); s != tc.want {
			t.Errorf("ParseShapes(%q) = %s, want %s", tc.in, s, tc.want)
		}
	}
}

func TestPlanRejectsBudgetBelowOneStep(t *testing.T) {
	cheapest := ModelConfig(tinyShapes()[0], DefaultVariants()[1], tinySeq, 1).TrainFLOPs(tinyBatch).Total()
	_, _, err := Plan([]float64{cheapest / 2}, tinyShapes(), DefaultVariants(), 1, tinySeq, tinyBatch)
	if err == nil || !strings.Contains(err.Error(), "--budgets") || !strings.Contains(err.Error(), "raise the budget") {
		t.Fatalf("err = %v, want a --budgets error that says to raise it", err)
	}
	// A budget that buys the small models but not the largest one trains
	// what it can and lists the rest as skipped.
	runs, skipped, err := Plan([]float64{cheapest * 1.5}, tinyShapes(), DefaultVariants(), 1, tinySeq, tinyBatch)
	if err != nil || len(runs) == 0 || len(skipped) == 0 {
		t.Fatalf("Plan = %d runs, %d skipped, %v; want some of each", len(runs), len(skipped), err)
	}
}

func TestStepsFor(t *testing.T) {
	for _, tc := range []struct {
		budget, perStep float64
		want            int
	}{
		{100, 10, 10},
		{99.999, 10, 9},
		{5, 10, 0},
		{0.3, 0.1, 2}, // the float64 quotient is 2.9999999999999996; FLOPs used stay ≤ budget
		{3e12, 1e9, 3000},
	} {
		got := StepsFor(tc.budget, tc.perStep)
		if got != tc.want || float64(got)*tc.perStep > tc.budget {
			t.Errorf("StepsFor(%v, %v) = %d, want %d", tc.budget, tc.perStep, got, tc.want)
		}
	}
}
