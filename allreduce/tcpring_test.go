package allreduce

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestTCPRingMatchesFixedOrder: the reference ring sums in the same order
// as Ring, so Bench can compare their results bit for bit.
func TestTCPRingMatchesFixedOrder(t *testing.T) {
	checkGoroutines(t)
	rng := rand.New(rand.NewPCG(6, 6))
	for _, tt := range []struct{ world, n, chunk int }{{1, 5, 16}, {2, 1, 16}, {3, 1000, 16}, {5, 3, 32}, {4, 10007, 64}} {
		rings, closeAll, err := dialTCPRings(tt.world, tt.chunk)
		if err != nil {
			t.Fatal(err)
		}
		xs := randomVectors(rng, tt.world, tt.n)
		want := ringOrderSum(xs)
		bufs := cloneAll(xs)
		errs, _ := onAllRanks(tt.world, func(r int) error { return rings[r].allReduce(bufs[r]) })
		closeAll()
		requireSums(t, fmt.Sprintf("world %d n %d", tt.world, tt.n), errs, bufs, want)
	}
}
