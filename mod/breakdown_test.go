package mod

import (
	"math"
	"math/rand/v2"
	"testing"
)

func smallStep(t *testing.T, cfg Config, batch, workers int) (*Parallel[float32], func()) {
	t.Helper()
	p, err := NewParallel[float32](cfg, batch, workers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	N := batch * p.Config().SeqLen
	tokens, targets := make([]int32, N), make([]int32, N)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range tokens {
		tokens[i], targets[i] = int32(r.IntN(cfg.Vocab)), int32(r.IntN(cfg.Vocab))
	}
	return p, func() {
		if _, err := p.Forward(tokens, targets); err != nil {
			t.Fatal(err)
		}
		if err := p.Backward(); err != nil {
			t.Fatal(err)
		}
	}
}

func smallConfig() Config {
	c := DefaultConfig()
	c.SeqLen, c.DModel, c.MLPHidden, c.Layers = 32, 64, 128, 4
	return c.WithDefaults()
}

// The step's products are what the roofline and the breakdown account
// for; both must see every product the analytic FLOP count has, once.
func TestBreakdownAndShapesCountEveryProduct(t *testing.T) {
	cases := []struct {
		name    string
		cfg     Config
		workers int
	}{
		{"dense, one replica", smallConfig().Dense(), 1},
		{"dense, two replicas", smallConfig().Dense(), 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			const batch = 4
			p, step := smallStep(t, c.cfg, batch, c.workers)
			p.EnableBreakdown(true)
			step()
			want := c.cfg.TrainFLOPs(batch).Total()
			bd := p.Breakdown()
			if got := bd.FLOPs[OpMatmul] + bd.FLOPs[OpAttention]; math.Abs(got-want) > 1e-9*want {
				t.Errorf("breakdown counts %g product FLOPs, the analytic count is %g", got, want)
			}
			var shapes float64
			for _, m := range p.Replicas() {
				for _, s := range m.GEMMShapes() {
					shapes += s.FLOPs()
				}
			}
			if math.Abs(shapes-want) > 1e-9*want {
				t.Errorf("GEMMShapes add up to %g FLOPs, the analytic count is %g", shapes, want)
			}
			for k := OpClass(0); k < NumOpClasses; k++ {
				if bd.Time[k] < 0 {
					t.Errorf("class %s has negative time %v", k, bd.Time[k])
				}
			}
			if bd.Time[OpMatmul] == 0 || bd.Time[OpCombine] == 0 {
				t.Errorf("no time charged to matmul (%v) or the gradient combine (%v)", bd.Time[OpMatmul], bd.Time[OpCombine])
			}
		})
	}
}

// A dense training step allocates nothing, with the breakdown's clock on
// or off.
func TestTrainingStepAllocatesNothing(t *testing.T) {
	for _, on := range []bool{false, true} {
		p, step := smallStep(t, smallConfig().Dense(), 2, 2)
		p.EnableBreakdown(on)
		step()
		if n := testing.AllocsPerRun(3, step); n > 0 {
			t.Errorf("breakdown %v: a training step allocates %v times", on, n)
		}
	}
}
