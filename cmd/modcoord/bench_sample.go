package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/bench"
	"github.com/modcoord/modcoord/mod"
)

// sampleBench is one batch size's decode comparison.
type sampleBench struct {
	Batch             int     `json:"batch"`
	DenseTokensPerS   float64 `json:"dense_tokens_per_s"`
	MoDTokensPerS     float64 `json:"mod_tokens_per_s"`
	Speedup           float64 `json:"speedup"`
	DenseKVBytes      int     `json:"dense_kv_bytes"`
	MoDKVBytes        int     `json:"mod_kv_bytes"`
	KVBytesRatio      float64 `json:"kv_bytes_ratio"`
	MoDRoutedFraction float64 `json:"mod_routed_fraction"`
}

// newBenchSampleCmd decodes a full context with the trained MoD model of
// a checkpoint and with a dense model of the same shape (random weights:
// its speed does not depend on them), at each batch size.
func newBenchSampleCmd() *cobra.Command {
	var (
		ckpt    string
		reps    int
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "sample",
		Short: "Decode speed and KV-cache size of a trained MoD checkpoint against a dense model",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchSample(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), ckpt, reps, jsonOut)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&ckpt, "checkpoint", "", "a trained MoD checkpoint (`modcoord train --out DIR` writes one); its causal decisions set how many tokens each routed layer takes")
	fs.IntVar(&reps, "reps", 3, "timed decodes per model and batch size (median)")
	addJSONFlag(cmd, &jsonOut)
	return cmd
}

func runBenchSample(ctx context.Context, stdout, stderr io.Writer, ckpt string, reps int, jsonOut bool) error {
	ck, err := openCheckpoint(ctx, stderr, ckpt)
	if err != nil {
		return err
	}
	params, err := ck.LoadParams(ctx)
	if err != nil {
		return fmt.Errorf("load %s: %w", ck.Dir, err)
	}
	cfg := ck.Config.Model
	if len(cfg.RoutedLayers) == 0 {
		return fmt.Errorf("checkpoint %s holds a dense model; bench sample needs a MoD one", ck.Dir)
	}
	denseCfg := cfg.Dense()
	denseParams := make([]float32, mod.NewLayout(denseCfg).Total)
	mod.InitParams(denseCfg, mod.NewLayout(denseCfg), denseParams)

	prompt := []byte("\n")
	n := cfg.SeqLen - len(prompt)
	res := map[string]any{"checkpoint": ck.Dir, "model": cfg.String(), "tokens_per_row": n}
	for _, batch := range []int{1, 8} {
		var r sampleBench
		r.Batch = batch
		var dt, mt []float64
		for i := 0; i < reps; i++ {
			for _, which := range []string{"dense", "mod"} {
				c, p := cfg, params
				if which == "dense" {
					c, p = denseCfg, denseParams
				}
				t0 := time.Now()
				_, dec, err := generate(ctx, c, p, prompt, n, batch, 1, 0, uint64(i+1))
				if err != nil {
					return err
				}
				tps := float64(batch*(n+len(prompt))) / time.Since(t0).Seconds()
				if which == "dense" {
					dt, r.DenseKVBytes = append(dt, tps), dec.KVBytes()
				} else {
					mt, r.MoDKVBytes = append(mt, tps), dec.KVBytes()
					var f float64
					for _, l := range cfg.RoutedLayers {
						f += dec.RoutedFraction()[l] / float64(len(cfg.RoutedLayers))
					}
					r.MoDRoutedFraction = f
				}
			}
		}
		r.DenseTokensPerS, r.MoDTokensPerS = bench.Median(dt), bench.Median(mt)
		r.Speedup = r.MoDTokensPerS / r.DenseTokensPerS
		r.KVBytesRatio = float64(r.MoDKVBytes) / float64(r.DenseKVBytes)
		res[fmt.Sprintf("batch%d", batch)] = r
		if !jsonOut {
			fmt.Fprintf(stdout, "batch %d: dense %.0f tok/s, MoD %.0f tok/s (%.2fx); KV cache %d vs %d bytes (%.2fx); MoD routed %.1f%% of tokens\n",
				batch, r.DenseTokensPerS, r.MoDTokensPerS, r.Speedup, r.MoDKVBytes, r.DenseKVBytes, r.KVBytesRatio, 100*r.MoDRoutedFraction)
		}
	}
	if jsonOut {
		return writeJSON(stdout, res)
	}
	return nil
}
