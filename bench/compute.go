package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/modcoord/modcoord/mod"
)

// ComputeResult compares a dense model's training step with the MoD model of
// the same shape, and this machine's sgemm peak, in one run.
type ComputeResult struct {
	BLAS            string    `json:"blas"`
	Batch           int       `json:"batch"`
	DenseStepS      float64   `json:"dense_step_s"`
	MoDStepS        float64   `json:"mod_step_s"`
	Speedup         float64   `json:"speedup"`
	DenseFLOPs      float64   `json:"dense_flops_per_step"`
	MoDFLOPs        float64   `json:"mod_flops_per_step"`
	FLOPRatio       float64   `json:"flop_ratio"` // dense FLOPs / MoD FLOPs
	Efficiency      float64   `json:"efficiency"` // speedup / flop_ratio
	DenseGFLOPs     float64   `json:"dense_gflops"`
	MoDGFLOPs       float64   `json:"mod_gflops"`
	SgemmPeakGFLOPs float64   `json:"sgemm_peak_gflops"`
	DenseSteps      []float64 `json:"dense_steps_s"`
	MoDSteps        []float64 `json:"mod_steps_s"`
}

// Compute times forward + backward + AdamW for cfg.Dense() and cfg
// (MoD), alternating the two so that machine noise hits both alike, and
// reports the medians.
func Compute(ctx context.Context, cfg mod.Config, batch, reps int, logf func(string)) (ComputeResult, error) {
	res := ComputeResult{BLAS: mod.BLASEngine(), Batch: batch}
	res.SgemmPeakGFLOPs = mod.SgemmPeak(1024, 5)
	logf(fmt.Sprintf("sgemm 1024³: %.1f GFLOP/s", res.SgemmPeakGFLOPs))
	type runner struct {
		model *mod.Parallel[float32]
		step  func() error
		times []float64
	}
	mk := func(c mod.Config) (*runner, error) {
		m, err := mod.NewParallel[float32](c, batch, 0)
		if err != nil {
			return nil, err
		}
		N := batch * c.SeqLen
		tokens, targets := make([]int32, N), make([]int32, N)
		r := rand.New(rand.NewPCG(c.Seed, 77))
		for i := range tokens {
			tokens[i], targets[i] = int32(r.IntN(c.Vocab)), int32(r.IntN(c.Vocab))
		}
		opt := mod.DefaultOptim()
		mm, vv := make([]float32, len(m.Params())), make([]float32, len(m.Params()))
		decay := m.Layout().DecaySpans()
		step := 0
		return &runner{model: m, step: func() error {
			if _, err := m.Forward(tokens, targets); err != nil {
				return err
			}
			if err := m.Backward(); err != nil {
				return err
			}
			step++
			opt.AdamWStep(m.Params(), m.Grads(), mm, vv, 0, len(m.Params()), decay, step, 1e-4, 1)
			return nil
		}}, nil
	}
	dense, err := mk(cfg.Dense())
	if err != nil {
		return res, err
	}
	routed, err := mk(cfg)
	if err != nil {
		return res, err
	}
	for i := 0; i <= reps; i++ {
		for _, r := range []*runner{dense, routed} {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			t0 := time.Now()
			if err := r.step(); err != nil {
				return res, err
			}
			if i > 0 { // the first round warms caches and page-faults buffers in
				r.times = append(r.times, time.Since(t0).Seconds())
			}
		}
		if i > 0 {
			logf(fmt.Sprintf("round %d: dense %.3fs  MoD %.3fs", i, dense.times[i-1], routed.times[i-1]))
		}
	}
	dense.model.Close()
	routed.model.Close()
	res.DenseSteps, res.MoDSteps = dense.times, routed.times
	res.DenseStepS, res.MoDStepS = Median(dense.times), Median(routed.times)
	res.DenseFLOPs = cfg.Dense().TrainFLOPs(batch).Total()
	res.MoDFLOPs = cfg.TrainFLOPs(batch).Total()
	res.Speedup = res.DenseStepS / res.MoDStepS
	res.FLOPRatio = res.DenseFLOPs / res.MoDFLOPs
	res.Efficiency = res.Speedup / res.FLOPRatio
	res.DenseGFLOPs = res.DenseFLOPs / res.DenseStepS / 1e9
	res.MoDGFLOPs = res.MoDFLOPs / res.MoDStepS / 1e9
	return res, nil
}

// Median is the median of x; benchmarks report medians so that one
// disturbed repetition on a shared machine does not move the figure.
func Median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
