package isoflop

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/mod"
)

// cancelAtRun is a progress writer that cancels the sweep as run n starts,
// so that the sweep stops with runs before n finished and run n begun.
type cancelAtRun struct {
	n      int
	cancel context.CancelFunc
}

func (c *cancelAtRun) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("params")) && bytes.HasPrefix(p, []byte("[")) {
		if c.n--; c.n == 0 {
			c.cancel()
		}
	}
	return len(p), nil
}

// resumeOptions is a tiny sweep with two seeds and the random control,
// whose clock stands still so that the wall-clock fields are 0 and whole
// files can be compared.
func resumeOptions(t *testing.T) Options {
	opt := tinyOptions(t, 3*ModelConfig(tinyShapes()[1], DefaultVariants()[0], tinySeq, 1).TrainFLOPs(tinyBatch).Total())
	opt.Shapes = tinyShapes()[:2]
	opt.Variants = append(DefaultVariants()[:2], Variant{Name: "random-c0.125", Capacity: 0.125, Random: true})
	opt.Seeds = 2
	opt.Now = func() time.Time { return time.Unix(0, 0) }
	return opt
}

// TestSweepResumesToIdenticalTables interrupts a sweep in the middle of
// a run, resumes it, and compares every table and the plot byte for byte
// with a sweep that ran straight through.
func TestSweepResumesToIdenticalTables(t *testing.T) {
	ds := tinyCorpus(t)
	whole := resumeOptions(t)
	full, err := Sweep(context.Background(), ds, whole)
	if err != nil {
		t.Fatal(err)
	}
	total := len(whole.Shapes) * len(whole.Variants) * whole.Seeds
	if full.NumRuns != total {
		t.Fatalf("uninterrupted sweep: %d runs, want %d", full.NumRuns, total)
	}

	pieces := resumeOptions(t)
	for _, stopAt := range []int{3, 8} { // two interruptions, then a run to the end
		ctx, cancel := context.WithCancel(context.Background())
		pieces.Progress = &cancelAtRun{n: stopAt, cancel: cancel}
		rep, err := Sweep(ctx, ds, pieces)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted sweep: err = %v, want context.Canceled", err)
		}
		if rep.NumRuns >= total || rep.NumRuns == 0 {
			t.Fatalf("interrupted sweep kept %d of %d runs; want some, not all", rep.NumRuns, total)
		}
		files, _ := filepath.Glob(filepath.Join(pieces.OutDir, RunsDir, "*"))
		if len(files) != rep.NumRuns {
			t.Errorf("%d files in runs/, want one per finished run (%d): %v", len(files), rep.NumRuns, files)
		}
	}
	// Between pieces, --tables-only writes the tables of what is finished
	// and trains nothing.
	var log strings.Builder
	look := pieces
	look.TablesOnly, look.Progress = true, &log
	partial, err := Sweep(context.Background(), ds, look)
	if err != nil || partial.NumRuns == 0 || partial.NumRuns >= total || strings.Contains(log.String(), "val loss") {
		t.Fatalf("tables only: %d runs, err %v, log %q; want the finished runs and no training", partial.NumRuns, err, log.String())
	}
	log.Reset()
	pieces.Progress = &log
	rep, err := Sweep(context.Background(), ds, pieces)
	if err != nil {
		t.Fatal(err)
	}
	if rep.NumRuns != total || rep.Resumed == 0 || rep.Resumed == total {
		t.Fatalf("resumed sweep: %d runs, %d resumed; want %d runs, some but not all resumed", rep.NumRuns, rep.Resumed, total)
	}
	if trained := strings.Count(log.String(), "val loss"); trained != total-rep.Resumed {
		t.Errorf("resumed sweep trained %d runs, want only the %d unfinished", trained, total-rep.Resumed)
	}
	for _, name := range []string{RunsCSV, RunsJSON, SummaryMD, PlotPNG} {
		a, err := os.ReadFile(filepath.Join(whole.OutDir, name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(pieces.OutDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between the uninterrupted sweep and the resumed one (%d vs %d bytes)", name, len(a), len(b))
		}
	}

	// A sweep with other flags into the same directory is refused, naming
	// the file and the fix, before it trains anything.
	other := pieces
	other.Batch = tinyBatch * 2
	if _, err := Sweep(context.Background(), ds, other); err == nil || !strings.Contains(err.Error(), "other flags") {
		t.Errorf("sweep with another --batch into the same --out: err = %v, want one saying the files were written with other flags", err)
	}
}

func TestParseVariant(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Variant
		err  bool
	}{
		{in: "dense", want: Variant{Name: "dense"}},
		{in: "mod-c0.125", want: Variant{Name: "mod-c0.125", Capacity: 0.125}},
		{in: "random-c0.5", want: Variant{Name: "random-c0.5", Capacity: 0.5, Random: true}},
		{in: "mod-c0.125-every", want: Variant{Name: "mod-c0.125-every", Capacity: 0.125, Every: true}},
		{in: "random-c1-every", want: Variant{Name: "random-c1-every", Capacity: 1, Random: true, Every: true}},
		{in: "mod-c0.125-predictor", want: Variant{Name: "mod-c0.125-predictor", Capacity: 0.125, Predictor: true}},
		{in: "mod-c0.5-every-predictor", want: Variant{Name: "mod-c0.5-every-predictor", Capacity: 0.5, Every: true, Predictor: true}},
		{in: "random-c0.125-predictor", err: true},
		{in: "mod-c0.125-predictor-every", err: true},
		{in: "mod-c0", err: true},
		{in: "mod-c1.5", err: true},
		{in: "mod-cabc", err: true},
		{in: "moe-c0.1", err: true},
		{in: "", err: true},
	} {
		got, err := ParseVariant(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("ParseVariant(%q) = %+v, %v; want %+v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
	if _, err := ParseVariants("dense,dense"); err == nil {
		t.Error("ParseVariants accepted a variant listed twice")
	}
	// Every variant's model is valid and routes the layers its name says.
	for _, name := range []string{"mod-c0.125", "random-c0.125", "mod-c0.5-every", "mod-c0.125-predictor"} {
		v, _ := ParseVariant(name)
		cfg := ModelConfig(Shape{DModel: 32, Layers: 4, Heads: 2}, v, 32, 2)
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		wantLayers := 2
		if v.Every {
			wantLayers = 4
		}
		if len(cfg.RoutedLayers) != wantLayers || cfg.RandomRouting() != v.Random || cfg.Seed != 2 {
			t.Errorf("%s: routed layers %v, random %v, seed %d", name, cfg.RoutedLayers, cfg.RandomRouting(), cfg.Seed)
		}
		if (cfg.Decision == mod.DecisionPredictor) != v.Predictor {
			t.Errorf("%s: decision %q", name, cfg.Decision)
		}
	}
}

func TestCompareVerdicts(t *testing.T) {
	group := func(losses ...float64) Group {
		var rs []Result
		for i, l := range losses {
			rs = append(rs, Result{Budget: 1, Variant: "v", Shape: "s", Seed: i + 1, ValLoss: l})
		}
		return Groups(rs)[0]
	}
	for _, tc := range []struct {
		name string
		a, b Group
		want string
	}{
		{"clear win", group(1.00, 1.01, 0.99), group(1.10, 1.11, 1.09), VerdictBetter},
		{"clear loss", group(1.10, 1.11, 1.09), group(1.00, 1.01, 0.99), VerdictWorse},
		{"within spread", group(1.00, 1.05, 0.95), group(1.02, 1.07, 0.97), VerdictWithin},
		{"one seed", group(1.0), group(1.1, 1.2), VerdictOneSeed},
	} {
		if got := compare(1, tc.a, tc.b); got.Verdict != tc.want {
			t.Errorf("%s: verdict %q (Δ %.4f, SE %.4f), want %q", tc.name, got.Verdict, got.Delta, got.SE, tc.want)
		}
	}
	g := group(1, 2, 3)
	if g.ValLoss.Mean != 2 || g.ValLoss.Std != 1 || g.ValLoss.N != 3 {
		t.Errorf("stat of 1, 2, 3 = %+v, want mean 2, sample std 1, n 3", g.ValLoss)
	}
}
