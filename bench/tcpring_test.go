package bench

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/modcoord/modcoord/shard"
)

// TestTCPRingMatchesFixedOrder: the reference ring sums in the same order
// as Ring, so Bench can compare their results bit for bit.
func TestTCPRingMatchesFixedOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	for _, tt := range []struct{ world, n, chunk int }{{1, 5, 16}, {2, 1, 16}, {3, 1000, 16}, {5, 3, 32}, {4, 10007, 64}} {
		rings, closeAll, err := dialTCPRings(tt.world, tt.chunk)
		if err != nil {
			t.Fatal(err)
		}
		xs := randomVectors(rng, tt.world, tt.n)
		want := ringOrderSum(xs)
		bufs := cloneAll(xs)
		errs := onAllRanks(tt.world, func(r int) error { return rings[r].allReduce(bufs[r]) })
		closeAll()
		requireSums(t, fmt.Sprintf("world %d n %d", tt.world, tt.n), errs, bufs, want)
	}
}

// randomVectors returns world vectors of n floats spanning many orders of
// magnitude, so that a different summation order changes the bits.
func randomVectors(rng *rand.Rand, world, n int) [][]float32 {
	xs := make([][]float32, world)
	for r := range xs {
		xs[r] = make([]float32, n)
		for i := range xs[r] {
			xs[r][i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(9)-4)))
		}
	}
	return xs
}

// ringOrderSum is the ring's documented summation order (docs/allreduce.md),
// computed sequentially: element i of segment s is
// (((x[s+1] + x[s+2]) + ...) + x[s]).
func ringOrderSum(xs [][]float32) []float32 {
	world, n := len(xs), len(xs[0])
	l := shard.Layout{Total: n, World: world}
	out := make([]float32, n)
	for i := range out {
		s := l.Owner(i)
		acc := xs[(s+1)%world][i]
		for j := 2; j <= world; j++ {
			acc = acc + xs[(s+j)%world][i]
		}
		out[i] = acc
	}
	return out
}

func cloneAll(xs [][]float32) [][]float32 {
	out := make([][]float32, len(xs))
	for i := range xs {
		out[i] = append([]float32(nil), xs[i]...)
	}
	return out
}

// onAllRanks runs fn on every rank at once and collects the errors.
func onAllRanks(world int, fn func(rank int) error) []error {
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = fn(r)
		}()
	}
	wg.Wait()
	return errs
}

// requireSums fails unless every rank succeeded and holds want, bit for bit.
func requireSums(t *testing.T, what string, errs []error, bufs [][]float32, want []float32) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("%s: rank %d: %v", what, r, err)
		}
		for i := range want {
			if math.Float32bits(bufs[r][i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: rank %d: element %d = %v, want %v", what, r, i, bufs[r][i], want[i])
			}
		}
	}
}
