package mod

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkTrainStep times forward, backward and AdamW, the step that
// `modcoord train` runs, at the default config and at T = 512, where
// attention is blocked. It uses only the package's exported API so that
// the same file runs against an older tree for benchstat.
func BenchmarkTrainStep(b *testing.B) {
	long := DefaultConfig()
	long.SeqLen = 512
	for _, c := range []struct {
		name  string
		cfg   Config
		batch int
	}{
		{"default/mod", DefaultConfig(), 8},
		{"default/dense", DefaultConfig().Dense(), 8},
		{"T512/dense", long.Dense(), 2},
	} {
		b.Run(c.name, func(b *testing.B) {
			p, err := NewParallel[float32](c.cfg, c.batch, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			N := c.batch * c.cfg.SeqLen
			tokens, targets := make([]int32, N), make([]int32, N)
			r := rand.New(rand.NewPCG(1, 2))
			for i := range tokens {
				tokens[i], targets[i] = int32(r.IntN(c.cfg.Vocab)), int32(r.IntN(c.cfg.Vocab))
			}
			opt := DefaultOptim()
			m, v := make([]float32, len(p.Params())), make([]float32, len(p.Params()))
			decay := p.Layout().DecaySpans()
			b.ResetTimer()
			for i := range b.N {
				if _, err := p.Forward(tokens, targets); err != nil {
					b.Fatal(err)
				}
				if err := p.Backward(); err != nil {
					b.Fatal(err)
				}
				opt.AdamWStep(p.Params(), p.Grads(), m, v, 0, len(m), decay, i+1, 1e-4, 1)
			}
			b.ReportMetric(float64(N*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
