package mod

import (
	"runtime"
	"sync"
	"time"
)

// SgemmPeak is this machine's float32 matrix-multiply peak in GFLOP/s: the
// best of reps n×n×n products, measured two ways — one product on a
// threaded BLAS using every core, and one single-threaded product per core
// at once (how Parallel uses the machine) — and the higher of the two, so
// that efficiency figures are quoted against the harder bar.
func SgemmPeak(n, reps int) float64 {
	BLASEngine()
	cores := runtime.GOMAXPROCS(0)
	flops := 2 * float64(n) * float64(n) * float64(n)
	type prod struct{ p matmul }
	prods := make([]prod, cores)
	for i := range prods {
		a, b, c := make([]float32, n*n), make([]float32, n*n), make([]float32, n*n)
		for j := range a {
			a[j], b[j] = float32(j%7)*0.1, float32(j%5)*0.1
		}
		prods[i].p = planMatMul(a, false, b, false, c, n, n, n)
	}
	best := 0.0
	setBLASThreads(cores)
	for i := 0; i <= reps; i++ {
		t0 := time.Now()
		prods[0].p.run()
		if i > 0 {
			best = max(best, flops/time.Since(t0).Seconds()/1e9)
		}
	}
	setBLASThreads(1)
	for i := 0; i <= reps; i++ {
		var wg sync.WaitGroup
		t0 := time.Now()
		for j := range prods {
			wg.Add(1)
			go func() { defer wg.Done(); prods[j].p.run() }()
		}
		wg.Wait()
		if i > 0 {
			best = max(best, float64(cores)*flops/time.Since(t0).Seconds()/1e9)
		}
	}
	return best
}
