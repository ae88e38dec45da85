package allreduce

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modcoord/modcoord/shard"
)

// checkGoroutines fails t if, within a few seconds of the test's end
// (after every later Cleanup, which closes rings), the goroutine count has
// not come back to what it is now.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines leaked: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// gatherModes are the all-gather algorithms every collective test runs
// with.
var gatherModes = []GatherMode{GatherFanout, GatherRing}

// memRings makes world Rings over one MemTransport whose messages hold
// chunkFloats floats; mutate adjusts each rank's Config.
func memRings(t *testing.T, world, chunkFloats int, mutate func(*Config)) ([]*Ring, *MemTransport) {
	t.Helper()
	mt := NewMemTransport(headerSize + 4*chunkFloats)
	rings := make([]*Ring, world)
	for r := range rings {
		cfg := Config{Job: "test-job", Generation: 7, Rank: r, World: world, Deadline: 5 * time.Second}
		if mutate != nil {
			mutate(&cfg)
		}
		ring, err := NewRing(mt, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rings[r] = ring
	}
	t.Cleanup(func() {
		for _, r := range rings {
			r.Close()
		}
	})
	return rings, mt
}

// onAllRanks runs fn for every rank at once and returns each rank's
// error and how long it took.
func onAllRanks(world int, fn func(rank int) error) ([]error, []time.Duration) {
	errs := make([]error, world)
	took := make([]time.Duration, world)
	var wg sync.WaitGroup
	for r := range world {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			errs[r] = fn(r)
			took[r] = time.Since(start)
		}()
	}
	wg.Wait()
	return errs, took
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

// ringOrderSum is the documented summation order, computed sequentially:
// element i of segment s is (((x[s+1] + x[s+2]) + ...) + x[s]).
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

// requireSums fails the test unless every rank's collective succeeded
// and left want in its buffer, bit for bit; what names the case.
func requireSums(t *testing.T, what string, errs []error, bufs [][]float32, want []float32) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("%s: rank %d: %v", what, r, err)
		}
		if i, ok := sameBits(bufs[r], want); !ok {
			t.Fatalf("%s: rank %d: element %d = %v, want %v", what, r, i, bufs[r][i], want[i])
		}
	}
}

func sameBits(a, b []float32) (int, bool) {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i, false
		}
	}
	return -1, len(a) == len(b)
}

// cutTransport passes messages through until its budget runs out, then
// silently drops every send: a rank that died (or was partitioned away).
type cutTransport struct {
	Transport
	limited atomic.Bool
	budget  atomic.Int64 // sends left once limited
	onCut   func()
	once    sync.Once
}

func newCutTransport(t Transport) *cutTransport { return &cutTransport{Transport: t} }

// cutAfter lets n more messages through.
func (c *cutTransport) cutAfter(n int64) {
	c.budget.Store(n)
	c.limited.Store(true)
}

func (c *cutTransport) Send(inbox string, msg []byte) error {
	if c.limited.Load() && c.budget.Add(-1) < 0 {
		if c.onCut != nil {
			c.once.Do(c.onCut)
		}
		return nil
	}
	return c.Transport.Send(inbox, msg)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
