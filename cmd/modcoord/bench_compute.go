package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/bench"
	"github.com/modcoord/modcoord/mod"
)

func newBenchComputeCmd() *cobra.Command {
	var (
		d, layers, heads, seq, batch, reps int
		capacity                           float64
		jsonOut, breakdown                 bool
		cpuProfile                         string
	)
	cmd := &cobra.Command{
		Use:   "compute",
		Short: "Time a dense and a MoD training step of the same shape against the sgemm peak at its own products",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if reps < 1 {
				return usageErrorf("--reps %d: need at least 1", reps)
			}
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			cfg := mod.Config{DModel: d, Layers: layers, Heads: heads, SeqLen: seq, Capacity: capacity, Seed: 1}.WithDefaults()
			res, err := bench.Compute(cmd.Context(), cfg, batch, reps, breakdown, func(s string) { fmt.Fprintln(stderr, s) })
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(out, res)
			}
			printCompute(out, cfg, capacity, res)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&d, "d", 512, "d_model")
	fs.IntVar(&layers, "layers", 8, "layers")
	fs.IntVar(&heads, "heads", 8, "attention heads")
	fs.IntVar(&seq, "seq", 512, "sequence length")
	fs.IntVar(&batch, "batch", 8, "sequences per step")
	fs.Float64Var(&capacity, "capacity", 0.125, "MoD capacity on every other layer")
	fs.IntVar(&reps, "reps", 3, "timed steps per model (median), after one warm-up step")
	fs.BoolVar(&breakdown, "breakdown", false, "also time every op by class (matmul, attention, norm+gelu+rope, routing, optimizer, ring/combine, other)")
	addJSONFlag(cmd, &jsonOut)
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	return cmd
}

func printCompute(out io.Writer, cfg mod.Config, capacity float64, res bench.ComputeResult) {
	rl := res.Roofline
	fmt.Fprintf(out, "shape        %s, batch %d, %d cores, load average %s\n", cfg.Dense(), res.Batch, res.Cores, res.LoadAvg)
	fmt.Fprintf(out, "BLAS         %s\n", res.BLAS)
	fmt.Fprintf(out, "roofline     dense products %.1f GFLOP/s, MoD products %.1f GFLOP/s, copy %.1f GB/s (best of %d rounds)\n",
		rl.DensePeakGFLOPs, rl.MoDPeakGFLOPs, rl.CopyGBs, len(res.DenseSteps)+1)
	fmt.Fprintf(out, "dense        %.3f s/step  %.1f model GFLOP/s  %.1f executed GFLOP/s (%.0f%% of its peak)\n", res.DenseStepS, res.DenseGFLOPs, res.DenseExecGFLOPs, 100*rl.DenseOfPeak)
	fmt.Fprintf(out, "MoD C=%g     %.3f s/step  %.1f model GFLOP/s  %.1f executed GFLOP/s (%.0f%% of its peak)\n", capacity, res.MoDStepS, res.MoDGFLOPs, res.MoDExecGFLOPs, 100*rl.MoDOfPeak)
	fmt.Fprintf(out, "speedup      %.2fx for a FLOP ratio of %.2fx: efficiency %.2f\n", res.Speedup, res.FLOPRatio, res.Efficiency)
	for _, m := range []struct {
		name   string
		shapes []mod.ShapePeak
	}{{"dense", rl.DenseShapes}, {"MoD", rl.MoDShapes}} {
		fmt.Fprintf(out, "\n%s products per replica step (M×K×N, op(A) op(B), count): peak GFLOP/s per core-parallel | threaded\n", m.name)
		for _, s := range m.shapes {
			fmt.Fprintf(out, "  %5d×%5d×%5d  %s %s ×%-4d %7.1f | %7.1f\n", s.M, s.K, s.N, trans(s.TransA), trans(s.TransB), s.Count, s.PerCoreGFLOPs, s.ThreadedGFLOPs)
		}
	}
	if b := res.Breakdown; b != nil {
		for _, m := range []struct {
			name     string
			rows     []bench.OpRow
			coverage float64
		}{{"dense", b.Dense, b.DenseCoverage}, {"MoD", b.MoD, b.MoDCoverage}} {
			fmt.Fprintf(out, "\n%s breakdown per step (%.1f%% of wall-clock accounted for)\n", m.name, 100*m.coverage)
			for _, r := range m.rows {
				rate := ""
				switch {
				case r.GFLOPs > 0:
					rate = fmt.Sprintf("%7.1f GFLOP/s", r.GFLOPs)
				case r.GBs > 0:
					rate = fmt.Sprintf("%7.1f GB/s", r.GBs)
				}
				fmt.Fprintf(out, "  %-16s %8.4f s  %5.1f%%  %s\n", r.Class, r.Seconds, 100*r.Share, rate)
			}
		}
	}
}

func trans(t bool) string {
	if t {
		return "T"
	}
	return "N"
}
