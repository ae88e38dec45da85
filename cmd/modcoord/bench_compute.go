package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/bench"
	"github.com/modcoord/modcoord/mod"
)

func newBenchComputeCmd() *cobra.Command {
	var (
		d, layers, heads, seq, batch, reps int
		capacity                           float64
		jsonOut                            bool
		cpuProfile                         string
	)
	cmd := &cobra.Command{
		Use:   "compute",
		Short: "Time a dense and a MoD training step of the same shape, and the sgemm peak",
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
			res, err := bench.Compute(cmd.Context(), cfg, batch, reps, func(s string) { fmt.Fprintln(stderr, s) })
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(out, res)
			}
			fmt.Fprintf(out, "shape        %s, batch %d\n", cfg.Dense(), batch)
			fmt.Fprintf(out, "sgemm peak   %.1f GFLOP/s (%s)\n", res.SgemmPeakGFLOPs, res.BLAS)
			fmt.Fprintf(out, "dense        %.3f s/step  %.1f GFLOP/s  (%.0f%% of peak)\n", res.DenseStepS, res.DenseGFLOPs, 100*res.DenseGFLOPs/res.SgemmPeakGFLOPs)
			fmt.Fprintf(out, "MoD C=%g     %.3f s/step  %.1f GFLOP/s\n", capacity, res.MoDStepS, res.MoDGFLOPs)
			fmt.Fprintf(out, "speedup      %.2fx for a FLOP ratio of %.2fx: efficiency %.2f\n", res.Speedup, res.FLOPRatio, res.Efficiency)
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
	addJSONFlag(cmd, &jsonOut)
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	return cmd
}
