package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/modcoord/modcoord/mod"
)

// ComputeResult compares a dense model's training step with the MoD model of
// the same shape, and holds each against this machine's roofline measured
// in the same run.
type ComputeResult struct {
	BLAS        string  `json:"blas"`
	Batch       int     `json:"batch"`
	Cores       int     `json:"cores"`
	LoadAvg     string  `json:"load_avg"` // /proc/loadavg at the start: how shared the machine was
	DenseStepS  float64 `json:"dense_step_s"`
	MoDStepS    float64 `json:"mod_step_s"`
	Speedup     float64 `json:"speedup"`
	DenseFLOPs  float64 `json:"dense_flops_per_step"`
	MoDFLOPs    float64 `json:"mod_flops_per_step"`
	FLOPRatio   float64 `json:"flop_ratio"`   // dense FLOPs / MoD FLOPs
	Efficiency  float64 `json:"efficiency"`   // speedup / flop_ratio
	DenseGFLOPs float64 `json:"dense_gflops"` // model FLOPs (mod.Config.TrainFLOPs) per second
	MoDGFLOPs   float64 `json:"mod_gflops"`
	// The FLOPs the step's products execute: fewer than the model FLOPs
	// where causal attention skips the masked blocks (s ≥ 256), and
	// without the router's dot products. The roofline holds these.
	DenseExecFLOPs  float64   `json:"dense_exec_flops_per_step"`
	MoDExecFLOPs    float64   `json:"mod_exec_flops_per_step"`
	DenseExecGFLOPs float64   `json:"dense_exec_gflops"`
	MoDExecGFLOPs   float64   `json:"mod_exec_gflops"`
	DenseSteps      []float64 `json:"dense_steps_s"`
	MoDSteps        []float64 `json:"mod_steps_s"`
	// SgemmPeakGFLOPs is the peak the dense step is held against:
	// Roofline.DensePeakGFLOPs.
	SgemmPeakGFLOPs float64    `json:"sgemm_peak_gflops"`
	Roofline        Roofline   `json:"roofline"`
	Breakdown       *Breakdown `json:"breakdown,omitempty"`
}

// Roofline is the machine's limits at the step's own work: each product
// shape the step runs, timed once per round between the steps, best
// round kept; and a copy's bandwidth for the memory-bound ops.
type Roofline struct {
	// DensePeakGFLOPs is the rate of the dense step's products if each
	// ran at its shape's peak (mod.StepPeak); the dense step, which also
	// does elementwise work, cannot exceed it.
	DensePeakGFLOPs float64         `json:"dense_peak_gflops"`
	MoDPeakGFLOPs   float64         `json:"mod_peak_gflops"`
	DenseOfPeak     float64         `json:"dense_of_peak"` // dense_exec_gflops / dense_peak_gflops
	MoDOfPeak       float64         `json:"mod_of_peak"`
	CopyGBs         float64         `json:"copy_gb_s"`
	DenseShapes     []mod.ShapePeak `json:"dense_shapes"`
	MoDShapes       []mod.ShapePeak `json:"mod_shapes"`
}

// Breakdown is each model's step time by class of op (see mod.OpClass),
// per step, over the timed rounds.
type Breakdown struct {
	Dense []OpRow `json:"dense"`
	MoD   []OpRow `json:"mod"`
	// Coverage is the part of the step's wall-clock the classes account
	// for; the rest is replicas waiting for each other and dispatch.
	DenseCoverage float64 `json:"dense_coverage"`
	MoDCoverage   float64 `json:"mod_coverage"`
}

// OpRow is one class of op's share of a step.
type OpRow struct {
	Class   string  `json:"class"`
	Seconds float64 `json:"seconds"`          // per step
	Share   float64 `json:"share"`            // of the step's wall-clock
	GFLOPs  float64 `json:"gflops,omitempty"` // products' rate, where the class does products
	GBs     float64 `json:"gb_s,omitempty"`   // bytes read and written per second, where counted
}

// Compute times forward + backward + AdamW for cfg.Dense() and cfg
// (MoD), alternating the two so that machine noise hits both alike, and
// reports the medians. Each round also measures the roofline once. With
// breakdown, every op is timed by class (a few thousand clock reads per
// step, which the step times include).
func Compute(ctx context.Context, cfg mod.Config, batch, reps int, breakdown bool, logf func(string)) (ComputeResult, error) {
	res := ComputeResult{BLAS: mod.BLASEngine(), Batch: batch, Cores: runtime.GOMAXPROCS(0), LoadAvg: loadAvg()}
	if reps < 1 {
		// Round 0 only warms up: with no timed round the medians below
		// would index an empty list.
		return res, fmt.Errorf("bench compute: reps %d: need at least 1 timed round", reps)
	}
	type runner struct {
		model *mod.Parallel[float32]
		step  func() error
		times []float64
		peak  *mod.PeakMeter
		opt   time.Duration // AdamW's time, when breaking down
		wall  time.Duration
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
		run := &runner{model: m, peak: mod.NewPeakMeter(m.Replicas()[0].GEMMShapes())}
		run.step = func() error {
			if _, err := m.Forward(tokens, targets); err != nil {
				return err
			}
			if err := m.Backward(); err != nil {
				return err
			}
			step++
			t0 := time.Now()
			opt.AdamWStep(m.Params(), m.Grads(), mm, vv, 0, len(m.Params()), decay, step, 1e-4, 1)
			run.opt += time.Since(t0)
			return nil
		}
		return run, nil
	}
	dense, err := mk(cfg.Dense())
	if err != nil {
		return res, err
	}
	defer dense.model.Close()
	routed, err := mk(cfg)
	if err != nil {
		return res, err
	}
	defer routed.model.Close()
	copies := mod.NewCopyMeter(32 << 20) // source and destination, per core: twice any L3 slice here
	for i := 0; i <= reps; i++ {
		copies.Measure()
		for _, r := range []*runner{dense, routed} {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			r.peak.Measure()
			if i == 1 { // the first round warms caches and page-faults buffers in
				r.model.EnableBreakdown(breakdown)
				r.opt = 0
			}
			t0 := time.Now()
			if err := r.step(); err != nil {
				return res, err
			}
			if i > 0 {
				r.wall += time.Since(t0)
				r.times = append(r.times, time.Since(t0).Seconds())
			}
		}
		if i > 0 {
			logf(fmt.Sprintf("round %d: dense %.3fs  MoD %.3fs", i, dense.times[i-1], routed.times[i-1]))
		}
	}
	res.DenseSteps, res.MoDSteps = dense.times, routed.times
	res.DenseStepS, res.MoDStepS = Median(dense.times), Median(routed.times)
	res.DenseFLOPs = cfg.Dense().TrainFLOPs(batch).Total()
	res.MoDFLOPs = cfg.TrainFLOPs(batch).Total()
	res.Speedup = res.DenseStepS / res.MoDStepS
	res.FLOPRatio = res.DenseFLOPs / res.MoDFLOPs
	res.Efficiency = res.Speedup / res.FLOPRatio
	res.DenseGFLOPs = res.DenseFLOPs / res.DenseStepS / 1e9
	res.MoDGFLOPs = res.MoDFLOPs / res.MoDStepS / 1e9
	rl := &res.Roofline
	rl.DenseShapes, rl.MoDShapes = dense.peak.Peaks, routed.peak.Peaks
	rl.DensePeakGFLOPs, rl.MoDPeakGFLOPs = mod.StepPeak(rl.DenseShapes), mod.StepPeak(rl.MoDShapes)
	res.DenseExecFLOPs, res.MoDExecFLOPs = execFLOPs(dense.model), execFLOPs(routed.model)
	res.DenseExecGFLOPs = res.DenseExecFLOPs / res.DenseStepS / 1e9
	res.MoDExecGFLOPs = res.MoDExecFLOPs / res.MoDStepS / 1e9
	rl.DenseOfPeak, rl.MoDOfPeak = res.DenseExecGFLOPs/rl.DensePeakGFLOPs, res.MoDExecGFLOPs/rl.MoDPeakGFLOPs
	rl.CopyGBs = copies.GBs
	res.SgemmPeakGFLOPs = rl.DensePeakGFLOPs
	if breakdown {
		params := float64(len(dense.model.Params()))
		rowsOf := func(r *runner, paramCount float64) ([]OpRow, float64) {
			t := r.model.Breakdown()
			t.Time[mod.OpOptimizer] += r.opt
			// AdamW reads the gradient, parameter and both moments and writes
			// all but the gradient back: 7 float32 accesses per parameter.
			t.Bytes[mod.OpOptimizer] += 7 * 4 * paramCount * float64(len(r.times))
			steps := float64(len(r.times))
			var rows []OpRow
			for k := mod.OpClass(0); k < mod.NumOpClasses; k++ {
				secs := t.Time[k].Seconds()
				row := OpRow{Class: k.String(), Seconds: secs / steps, Share: secs / r.wall.Seconds()}
				if secs > 0 {
					row.GFLOPs = t.FLOPs[k] / secs / 1e9
					row.GBs = t.Bytes[k] / secs / 1e9
				}
				rows = append(rows, row)
			}
			return rows, t.Total().Seconds() / r.wall.Seconds()
		}
		b := &Breakdown{}
		b.Dense, b.DenseCoverage = rowsOf(dense, params)
		b.MoD, b.MoDCoverage = rowsOf(routed, float64(len(routed.model.Params())))
		res.Breakdown = b
	}
	return res, nil
}

// execFLOPs is the work of one step's products over all replicas.
func execFLOPs(p *mod.Parallel[float32]) float64 {
	var f float64
	for _, m := range p.Replicas() {
		for _, s := range m.GEMMShapes() {
			f += s.FLOPs()
		}
	}
	return f
}

// loadAvg is /proc/loadavg's first three fields, or "" where there is none.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
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
