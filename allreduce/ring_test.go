package allreduce

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/modcoord/modcoord/shard"
)

// TestAllReduceMatchesFixedOrder is the determinism property: for random
// world sizes, lengths (including fewer elements than ranks and lengths
// not divisible by the world), chunk sizes and windows, every rank's
// result equals the documented summation order computed sequentially,
// bit for bit, and a second run gives the same bits.
func TestAllReduceMatchesFixedOrder(t *testing.T) {
	checkGoroutines(t)
	rng := rand.New(rand.NewPCG(11, 12))
	orderMatters := false
	for trial := range 40 {
		world := 1 + rng.IntN(8)
		n := rng.IntN(2000)
		switch trial % 4 {
		case 0:
			n = rng.IntN(world + 1) // fewer elements than ranks
		case 1:
			n = world*shard.Align*3 + 1 + rng.IntN(world*shard.Align-1)
		}
		chunk := shard.Align * (1 + rng.IntN(6))
		window := 1 + rng.IntN(4)
		xs := randomVectors(rng, world, n)
		want := ringOrderSum(xs)
		if world > 2 && n > 0 {
			if _, same := sameBits(want, rankOrderSum(xs)); !same {
				orderMatters = true
			}
		}

		// Both all-gathers, twice each: every run must give the same bits.
		var first [][]float32
		for run := range 2 * len(gatherModes) {
			gather := gatherModes[run%len(gatherModes)]
			rings, _ := memRings(t, world, chunk, func(c *Config) {
				c.Window, c.Generation, c.Gather = window, uint64(run), gather
			})
			bufs := cloneAll(xs)
			errs, _ := onAllRanks(world, func(r int) error {
				return rings[r].AllReduce(ctxTimeout(t, 10e9), 1, bufs[r])
			})
			requireSums(t, fmt.Sprintf("world %d n %d chunk %d window %d %v all-gather", world, n, chunk, window, gather), errs, bufs, want)
			if run > 0 {
				for r := range bufs {
					if i, ok := sameBits(bufs[r], first[r]); !ok {
						t.Fatalf("world %d n %d: rank %d element %d differs between runs", world, n, r, i)
					}
				}
			}
			first = bufs
			for _, ring := range rings {
				ring.Close()
			}
		}
	}
	if !orderMatters {
		t.Error("no trial's values were sensitive to summation order; the test proves nothing")
	}
}

// rankOrderSum adds in plain rank order, which differs from the ring's.
func rankOrderSum(xs [][]float32) []float32 {
	out := append([]float32(nil), xs[0]...)
	for _, x := range xs[1:] {
		for i := range out {
			out[i] += x[i]
		}
	}
	return out
}

func TestReduceScatterAndAllGatherSeparately(t *testing.T) {
	checkGoroutines(t)
	type test struct {
		world, n, chunk int
		gather          GatherMode
	}
	var tests []test
	for _, g := range gatherModes {
		for _, tt := range []test{
			{1, 10, 16, g}, {2, 1, 16, g}, {3, 2, 16, g}, {4, 100, 16, g}, {5, 1000, 32, g}, {8, 4099, 64, g},
		} {
			tests = append(tests, tt)
		}
	}
	for _, tt := range tests {
		rng := rand.New(rand.NewPCG(uint64(tt.world), uint64(tt.n)))
		rings, _ := memRings(t, tt.world, tt.chunk, func(c *Config) { c.Gather = tt.gather })
		xs := randomVectors(rng, tt.world, tt.n)
		want := ringOrderSum(xs)
		bufs := cloneAll(xs)
		errs, _ := onAllRanks(tt.world, func(r int) error {
			return rings[r].ReduceScatter(context.Background(), 3, bufs[r])
		})
		l := shard.Layout{Total: tt.n, World: tt.world}
		for r, err := range errs {
			if err != nil {
				t.Fatalf("world %d n %d: reduce-scatter rank %d: %v", tt.world, tt.n, r, err)
			}
			lo, hi := l.Range(r)
			if i, ok := sameBits(bufs[r][lo:hi], want[lo:hi]); !ok {
				t.Fatalf("world %d n %d: reduce-scatter rank %d element %d = %v, want %v", tt.world, tt.n, r, lo+i, bufs[r][lo+i], want[lo+i])
			}
			// Scribble over the scratch so all-gather must bring it back.
			for i := range bufs[r] {
				if i < lo || i >= hi {
					bufs[r][i] = float32(math.NaN())
				}
			}
		}
		errs, _ = onAllRanks(tt.world, func(r int) error {
			return rings[r].AllGather(context.Background(), 3, bufs[r])
		})
		requireSums(t, fmt.Sprintf("world %d n %d: %v all-gather", tt.world, tt.n, tt.gather), errs, bufs, want)
	}
}

// TestScalarsRankOrder: the scalar sum is ((v0 + v1) + v2) + ... in
// float64 on every rank, bit for bit.
func TestScalarsRankOrder(t *testing.T) {
	checkGoroutines(t)
	rng := rand.New(rand.NewPCG(21, 22))
	for range 20 {
		world, k := 1+rng.IntN(8), 1+rng.IntN(4)
		vals := make([][]float64, world)
		want := make([]float64, k)
		for r := range vals {
			vals[r] = make([]float64, k)
			for i := range vals[r] {
				vals[r][i] = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(17)-8))
				if r == 0 {
					want[i] = vals[r][i]
				} else {
					want[i] = want[i] + vals[r][i]
				}
			}
		}
		rings, _ := memRings(t, world, 16, nil)
		errs, _ := onAllRanks(world, func(r int) error {
			return rings[r].AllReduceScalars(context.Background(), 9, vals[r])
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("world %d: rank %d: %v", world, r, err)
			}
			for i := range want {
				if math.Float64bits(vals[r][i]) != math.Float64bits(want[i]) {
					t.Fatalf("world %d rank %d value %d = %v, rank-order sum %v", world, r, i, vals[r][i], want[i])
				}
			}
		}
	}
}

// TestCollectivesInSequence runs a training step's sequence several
// times on the same rings: fast ranks run ahead into the next collective
// while slow ones finish, which exercises buffering of early messages.
func TestCollectivesInSequence(t *testing.T) {
	checkGoroutines(t)
	for _, gather := range gatherModes {
		collectivesInSequence(t, gather)
	}
}

func collectivesInSequence(t *testing.T, gather GatherMode) {
	const world, n = 5, 777
	rings, _ := memRings(t, world, 16, func(c *Config) { c.Window, c.Gather = 2, gather })
	rng := rand.New(rand.NewPCG(31, 32))
	for step := uint64(1); step <= 5; step++ {
		xs := randomVectors(rng, world, n)
		want := ringOrderSum(xs)
		bufs := cloneAll(xs)
		norms := make([][]float64, world)
		errs, _ := onAllRanks(world, func(r int) error {
			ring := rings[r]
			if err := ring.ReduceScatter(context.Background(), step, bufs[r]); err != nil {
				return err
			}
			norms[r] = []float64{float64(r)}
			if err := ring.AllReduceScalars(context.Background(), step, norms[r]); err != nil {
				return err
			}
			return ring.AllGather(context.Background(), step, bufs[r])
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("%v all-gather step %d rank %d: %v", gather, step, r, err)
			}
			if i, ok := sameBits(bufs[r], want); !ok {
				t.Fatalf("%v all-gather step %d rank %d element %d differs", gather, step, r, i)
			}
			if norms[r][0] != 10 {
				t.Fatalf("step %d rank %d: scalar sum %v, want 10", step, r, norms[r][0])
			}
		}
	}
}

func TestNewRingRejects(t *testing.T) {
	mt := NewMemTransport(1 << 16)
	tests := []struct {
		name string
		cfg  Config
		t    Transport
	}{
		{"empty job", Config{Job: "", World: 1}, mt},
		{"job with a dot", Config{Job: "a.b", World: 1}, mt},
		{"job with a wildcard", Config{Job: "a*", World: 1}, mt},
		{"world 0", Config{Job: "j", World: 0}, mt},
		{"rank outside world", Config{Job: "j", Rank: 3, World: 3}, mt},
		{"negative rank", Config{Job: "j", Rank: -1, World: 3}, mt},
		{"messages too small", Config{Job: "j", World: 2}, NewMemTransport(headerSize + 4*shard.Align - 1)},
		{"unknown all-gather", Config{Job: "j", World: 2, Gather: 7}, mt},
	}
	for _, tt := range tests {
		if r, err := NewRing(tt.t, tt.cfg); err == nil {
			r.Close()
			t.Errorf("%s: NewRing succeeded", tt.name)
		}
	}
}

func TestChunkFollowsTransportAndConfig(t *testing.T) {
	tests := []struct {
		name       string
		maxMessage int
		chunkBytes int
		want       int
	}{
		{"transport limit", headerSize + 4*100, 0, 96},
		{"config limit", 1 << 20, 4096, 1024},
		{"default under a large transport", 64 << 20, 0, DefaultChunkBytes / 4},
	}
	for _, tt := range tests {
		r, err := NewRing(NewMemTransport(tt.maxMessage), Config{Job: "j", World: 2, ChunkBytes: tt.chunkBytes})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.ChunkFloats(); got != tt.want {
			t.Errorf("%s: %d floats per chunk, want %d", tt.name, got, tt.want)
		}
		r.Close()
	}
}

// TestPassChunking: a vector too small to fill the pipeline with full
// chunks is cut into at least minChunksPerSegment chunks per segment,
// never below minChunkFloats and never above the transport's limit, and
// the result is still the fixed-order sum.
func TestPassChunking(t *testing.T) {
	checkGoroutines(t)
	tests := []struct {
		name         string
		world, n     int
		maxChunk     int
		wantChunk    int
		wantMessages int // data messages each rank receives in a reduce-scatter
	}{
		{"large vector keeps the full chunk", 2, 4 * 8192 * 2, 8192, 8192, 4},
		{"mid-size vector is cut in four", 3, 3 * 40000, 1 << 18, 10000, 8},
		{"small vector stops at the minimum", 2, 2 * 6000, 1 << 18, minChunkFloats, 2},
		{"transport limit wins over the minimum", 2, 2 * 6000, 1024, 1024, 6},
	}
	for _, tt := range tests {
		rings, _ := memRings(t, tt.world, tt.maxChunk, func(c *Config) { c.ChunkBytes = 4 * tt.maxChunk })
		if got := rings[0].newRingPass(phaseReduceScatter, make([]float32, tt.n)).chunk; got != tt.wantChunk {
			t.Errorf("%s: chunk of %d floats, want %d", tt.name, got, tt.wantChunk)
		}
		xs := randomVectors(rand.New(rand.NewPCG(7, uint64(tt.n))), tt.world, tt.n)
		want := ringOrderSum(xs)
		bufs := cloneAll(xs)
		errs, _ := onAllRanks(tt.world, func(r int) error { return rings[r].AllReduce(context.Background(), 1, bufs[r]) })
		requireSums(t, tt.name, errs, bufs, want)
		if got := rings[0].newRingPass(phaseReduceScatter, bufs[0]).want; got != tt.wantMessages {
			t.Errorf("%s: %d chunks to receive, want %d", tt.name, got, tt.wantMessages)
		}
	}
}
