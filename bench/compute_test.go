package bench

import (
	"context"
	"math"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

// A tiny run of bench compute: the roofline is measured at the step's own
// products, the breakdown has every class and accounts for the step, and
// executed FLOPs never exceed model FLOPs.
func TestComputeReportsRooflineAndBreakdown(t *testing.T) {
	cfg := mod.Config{DModel: 32, Layers: 2, Heads: 2, SeqLen: 32, Capacity: 0.25, Seed: 1}.WithDefaults()
	res, err := Compute(context.Background(), cfg, 2, 1, true, func(string) {})
	if err != nil {
		t.Fatal(err)
	}
	rl := res.Roofline
	if len(rl.DenseShapes) == 0 || len(rl.MoDShapes) == 0 {
		t.Fatalf("roofline measured no product shapes: dense %d, MoD %d", len(rl.DenseShapes), len(rl.MoDShapes))
	}
	for _, v := range []struct {
		name string
		x    float64
	}{{"dense peak", rl.DensePeakGFLOPs}, {"MoD peak", rl.MoDPeakGFLOPs}, {"copy bandwidth", rl.CopyGBs}, {"dense of peak", rl.DenseOfPeak}} {
		if !(v.x > 0) || math.IsInf(v.x, 0) {
			t.Errorf("%s is %g", v.name, v.x)
		}
	}
	if res.SgemmPeakGFLOPs != rl.DensePeakGFLOPs {
		t.Errorf("sgemm_peak_gflops %g is not the dense step's peak %g", res.SgemmPeakGFLOPs, rl.DensePeakGFLOPs)
	}
	if res.DenseExecFLOPs > res.DenseFLOPs || res.MoDExecFLOPs > res.MoDFLOPs {
		t.Errorf("executed FLOPs exceed model FLOPs: dense %g > %g or MoD %g > %g", res.DenseExecFLOPs, res.DenseFLOPs, res.MoDExecFLOPs, res.MoDFLOPs)
	}
	b := res.Breakdown
	if b == nil {
		t.Fatal("no breakdown")
	}
	for _, rows := range [][]OpRow{b.Dense, b.MoD} {
		if len(rows) != int(mod.NumOpClasses) {
			t.Fatalf("breakdown has %d rows, want one per class (%d)", len(rows), mod.NumOpClasses)
		}
	}
	// The classes are timed inside the step, so they cannot add up to
	// more than it (a little slack for the clock's own reads).
	for _, c := range []float64{b.DenseCoverage, b.MoDCoverage} {
		if c <= 0 || c > 1.01 {
			t.Errorf("breakdown coverage %g is outside (0, 1]", c)
		}
	}
}

// Compute with no timed round is an error, not a panic in Median.
func TestComputeRejectsNoRounds(t *testing.T) {
	cfg := mod.Config{DModel: 32, Layers: 2, Heads: 2, SeqLen: 32, Capacity: 0.25, Seed: 1}.WithDefaults()
	if _, err := Compute(context.Background(), cfg, 2, 0, false, func(string) {}); err == nil {
		t.Fatal("reps 0: want an error")
	}
}
