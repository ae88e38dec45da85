package mod

import (
	"runtime"
	"sync"
	"time"
)

// The roofline a training step is held against is measured at the step's
// own matrix products, not at one square product: a 1024³ sgemm runs at a
// rate the model's [s,64]·[64,s] attention products never reach, and a
// peak measured elsewhere can read below the step itself on a noisy
// machine. Every product shape is timed several times, the shapes
// interleaved so that a burst of load hits them alike, and each shape's
// peak is its best repetition. The step's peak is then the rate its
// products would run at if each ran at its own peak.

// GEMMShape is one matrix product of the training step:
// C[M,N] = op(A)[M,K]·op(B)[K,N], run Count times per step by one replica.
type GEMMShape struct {
	M, K, N        int
	TransA, TransB bool
	Count          int
}

// FLOPs is the shape's work per step: 2·M·K·N per product.
func (s GEMMShape) FLOPs() float64 {
	return 2 * float64(s.M) * float64(s.K) * float64(s.N) * float64(s.Count)
}

// GEMMShapes lists the distinct products one replica of m runs in a
// training step (forward and backward, transposes included), in first-run
// order, each with how often it runs.
func (m *Model[F]) GEMMShapes() []GEMMShape {
	var out []GEMMShape
	index := map[[5]int]int{}
	addPlan := func(p *matmul) {
		if p.m == 0 || p.n == 0 || (p.m <= gemvRows && !p.isTransA()) {
			return // not a gemm (see matmul.run)
		}
		key := [5]int{p.m, p.k, p.n, b2i(p.isTransA()), b2i(p.isTransB())}
		if i, ok := index[key]; ok {
			out[i].Count++
			return
		}
		index[key] = len(out)
		out = append(out, GEMMShape{M: p.m, K: p.k, N: p.n, TransA: p.isTransA(), TransB: p.isTransB(), Count: 1})
	}
	for i := range m.layers {
		pl := &m.layers[i].plans
		for _, p := range []*matmul{&pl.qkv, &pl.attn, &pl.fc, &pl.mlp, &pl.dFcGelu, &pl.dW2, &pl.dW1, &pl.dLn2, &pl.dAttnY, &pl.dWo, &pl.dWqkv, &pl.dLn1} {
			addPlan(p)
		}
		if m.layers[i].predictor {
			addPlan(&pl.predFc)
			addPlan(&pl.dPredW1)
		}
		for _, ps := range [][]matmul{pl.scores, pl.heads, pl.dProbs, pl.dv, pl.dq, pl.dk} {
			for j := range ps {
				addPlan(&ps[j])
			}
		}
	}
	addPlan(&m.lmHead)
	addPlan(&m.dlmHead)
	addPlan(&m.duf)
	return out
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ShapePeak is one product shape's measured sgemm rate on this machine.
type ShapePeak struct {
	GEMMShape
	// GFLOPs is the best repetition's rate over all cores, the higher of
	// one single-threaded product per core at once (how Parallel runs)
	// and one product on a threaded BLAS using every core.
	GFLOPs         float64 `json:"gflops"`
	PerCoreGFLOPs  float64 `json:"per_core_gflops"` // best, one single-threaded product per core
	ThreadedGFLOPs float64 `json:"threaded_gflops"` // best, one product on all cores
}

// PeakMeter measures the sgemm rate of a list of product shapes.
type PeakMeter struct {
	plans [][]matmul // per shape, one product per core on its own buffers
	Peaks []ShapePeak
}

// NewPeakMeter allocates the buffers to time shapes with.
func NewPeakMeter(shapes []GEMMShape) *PeakMeter {
	BLASEngine()
	cores := runtime.GOMAXPROCS(0)
	pm := &PeakMeter{plans: make([][]matmul, len(shapes)), Peaks: make([]ShapePeak, len(shapes))}
	for i, s := range shapes {
		pm.Peaks[i].GEMMShape = s
		pm.plans[i] = make([]matmul, cores)
		for c := range pm.plans[i] {
			a, b, cc := make([]float32, s.M*s.K), make([]float32, s.K*s.N), make([]float32, s.M*s.N)
			for j := range a {
				a[j] = float32(j%7) * 0.1
			}
			for j := range b {
				b[j] = float32(j%5) * 0.1
			}
			pm.plans[i][c] = planMatMul(a, s.TransA, b, s.TransB, cc, s.M, s.K, s.N)
		}
	}
	return pm
}

// Measure times every shape once, both ways, and keeps each shape's best
// so far. A repetition runs the product often enough to do about
// minFLOPs of work per core, so that neither the clock's resolution nor
// the goroutine start shows. Callers interleave Measure with the work it
// is a roof for, so that a burst of load from elsewhere hits both.
//
// All shapes run per core first, then all threaded, then Measure waits
// out OpenBLAS's idle spin: after a threaded call its worker threads
// busy-wait (sched_yield) for about 2^28 cycles before they sleep, and
// on a machine with one core per replica that spin takes CPU from
// whatever runs next. Timed per shape in turn, it depressed the next
// shape's per-core figure and the start of the step that followed.
func (pm *PeakMeter) Measure() {
	if len(pm.plans) == 0 {
		return
	}
	cores := len(pm.plans[0])
	const minFLOPs = 5e7
	iters := func(o *ShapePeak) (int, float64) {
		one := 2 * float64(o.M) * float64(o.K) * float64(o.N)
		return max(1, int(minFLOPs/one+0.5)), one
	}
	var wg sync.WaitGroup
	setBLASThreads(1)
	for i := range pm.plans {
		o := &pm.Peaks[i]
		n, one := iters(o)
		t0 := time.Now()
		for c := 0; c < cores; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n {
					pm.plans[i][c].run()
				}
			}()
		}
		wg.Wait()
		o.PerCoreGFLOPs = max(o.PerCoreGFLOPs, float64(cores*n)*one/time.Since(t0).Seconds()/1e9)
	}
	setBLASThreads(cores)
	for i := range pm.plans {
		o := &pm.Peaks[i]
		n, one := iters(o)
		t0 := time.Now()
		for range n {
			pm.plans[i][0].run()
		}
		o.ThreadedGFLOPs = max(o.ThreadedGFLOPs, float64(n)*one/time.Since(t0).Seconds()/1e9)
	}
	setBLASThreads(1)
	for i := range pm.Peaks {
		o := &pm.Peaks[i]
		o.GFLOPs = max(o.PerCoreGFLOPs, o.ThreadedGFLOPs)
	}
	if cores > 1 {
		time.Sleep(openBLASSpin)
	}
}

// openBLASSpin is longer than OpenBLAS's default idle spin (2^28 cycles:
// 0.13 s at 2 GHz).
const openBLASSpin = 300 * time.Millisecond

// StepPeak is the rate a step's products would reach if each ran at its
// shape's peak: total FLOPs over the sum of each shape's best time.
func StepPeak(peaks []ShapePeak) float64 {
	var flops, secs float64
	for _, p := range peaks {
		if p.GFLOPs <= 0 {
			continue
		}
		flops += p.FLOPs()
		secs += p.FLOPs() / (p.GFLOPs * 1e9)
	}
	if secs == 0 {
		return 0
	}
	return flops / secs / 1e9
}

// CopyMeter measures memory bandwidth with one large copy per core at
// once: the roof of the memory-bound ops.
type CopyMeter struct {
	src, dst [][]float32
	// GBs is the best rate so far, counting both the read and the write.
	GBs float64
}

// NewCopyMeter allocates two buffers of bytes per core; they should be
// well beyond the caches.
func NewCopyMeter(bytes int) *CopyMeter {
	cores := runtime.GOMAXPROCS(0)
	n := max(1, bytes/4)
	cm := &CopyMeter{src: make([][]float32, cores), dst: make([][]float32, cores)}
	for c := range cm.src {
		cm.src[c], cm.dst[c] = make([]float32, n), make([]float32, n)
		for j := range cm.src[c] {
			cm.src[c][j] = float32(j)
		}
		copy(cm.dst[c], cm.src[c]) // fault the pages in
	}
	return cm
}

// Measure copies once per core and keeps the best rate so far.
func (cm *CopyMeter) Measure() {
	var wg sync.WaitGroup
	t0 := time.Now()
	for c := range cm.src {
		wg.Add(1)
		go func() { defer wg.Done(); copy(cm.dst[c], cm.src[c]) }()
	}
	wg.Wait()
	bytes := float64(len(cm.src)) * 2 * 4 * float64(len(cm.src[0]))
	cm.GBs = max(cm.GBs, bytes/time.Since(t0).Seconds()/1e9)
}
