package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/modcoord/modcoord/bench"
	"github.com/modcoord/modcoord/mod"
)

func benchCompute(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench compute", flag.ContinueOnError)
	d := fs.Int("d", 512, "d_model")
	layers := fs.Int("layers", 8, "layers")
	heads := fs.Int("heads", 8, "attention heads")
	seq := fs.Int("seq", 512, "sequence length")
	batch := fs.Int("batch", 8, "sequences per step")
	capacity := fs.Float64("capacity", 0.125, "MoD capacity on every other layer")
	reps := fs.Int("reps", 3, "timed steps per model (median), after one warm-up step")
	jsonOut := fs.Bool("json", false, "print one JSON object")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (go tool pprof) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *reps < 1 {
		return fmt.Errorf("--reps %d: need at least 1", *reps)
	}
	cfg := mod.Config{DModel: *d, Layers: *layers, Heads: *heads, SeqLen: *seq, Capacity: *capacity, Seed: 1}.WithDefaults()
	res, err := bench.Compute(ctx, cfg, *batch, *reps, func(s string) { fmt.Fprintln(os.Stderr, s) })
	if err != nil {
		return err
	}
	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("shape        %s, batch %d\n", cfg.Dense(), *batch)
	fmt.Printf("sgemm peak   %.1f GFLOP/s (%s)\n", res.SgemmPeakGFLOPs, res.BLAS)
	fmt.Printf("dense        %.3f s/step  %.1f GFLOP/s  (%.0f%% of peak)\n", res.DenseStepS, res.DenseGFLOPs, 100*res.DenseGFLOPs/res.SgemmPeakGFLOPs)
	fmt.Printf("MoD C=%g     %.3f s/step  %.1f GFLOP/s\n", *capacity, res.MoDStepS, res.MoDGFLOPs)
	fmt.Printf("speedup      %.2fx for a FLOP ratio of %.2fx: efficiency %.2f\n", res.Speedup, res.FLOPRatio, res.Efficiency)
	return nil
}
