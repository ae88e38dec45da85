package mod

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// tinyConfig is small enough for exhaustive finite differences.
func tinyConfig(decision, positions string) Config {
	return Config{
		Vocab: 16, DModel: 8, Layers: 3, Heads: 2, SeqLen: 8, MLPHidden: 16,
		RoutedLayers: []int{1, 2}, Capacity: 0.5, Decision: decision,
		AuxLossWeight: 0.1, PredictorHidden: 6, Positions: positions, Seed: 3,
	}.WithDefaults()
}

// randomize gives every parameter a non-trivial value so that every
// gradient path carries signal (init leaves norms at 1 and biases at 0).
func randomize[F Float](params []F, seed uint64, std float64) {
	r := newRNG(seed, 99)
	for i := range params {
		params[i] = F(r.normal() * std)
	}
}

func randomTokens(n, vocab int, seed uint64) []int32 {
	r := newRNG(seed, 5)
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(r.uint64() % uint64(vocab))
	}
	return t
}

func selections[F Float](m *Model[F]) [][]int32 {
	var out [][]int32
	for l := range m.layers {
		if s := m.Selected(l); s != nil {
			out = append(out, slices.Clone(s))
		}
	}
	return out
}

// TestGradientsMatchFiniteDifferences checks every parameter of every group
// (embeddings, norms, attention, MLP, routers, causal head) against central
// differences, in float64 with eps = 1e-5: the analytic and numeric values
// must agree to a relative error of 1e-6 (absolute 1e-9 near zero).
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		decision, positions string
		routing             string // "" is learned
		every               bool   // route every layer, the first included
	}{
		{DecisionAuxLoss, PositionsRoPE, "", false},
		{DecisionPredictor, PositionsLearned, "", false},
		{DecisionAuxLoss, PositionsLearned, "", false},
		{DecisionPredictor, PositionsRoPE, "", false},
		{DecisionAuxLoss, PositionsRoPE, RoutingRandom, false},
		{DecisionAuxLoss, PositionsRoPE, "", true},
	} {
		name := tc.decision + "/" + tc.positions
		if tc.routing != "" {
			name += "/" + tc.routing
		}
		if tc.every {
			name += "/every-layer"
		}
		t.Run(name, func(t *testing.T) {
			cfg := tinyConfig(tc.decision, tc.positions)
			cfg.Routing = tc.routing
			if tc.every {
				cfg.RoutedLayers = []int{0, 1, 2}
			}
			const B = 2
			m, err := NewModel[float64](cfg, B)
			if err != nil {
				t.Fatal(err)
			}
			randomize(m.Params(), 11, 0.5)
			N := B * cfg.SeqLen
			tokens := randomTokens(N, cfg.Vocab, 1)
			targets := randomTokens(N, cfg.Vocab, 2)
			if _, err := m.Forward(tokens, targets); err != nil {
				t.Fatal(err)
			}
			sel := selections(m)
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			analytic := slices.Clone(m.Grads())
			// The predictor's input is stop-gradient: its loss trains only the
			// predictor, so the other parameters are checked against the loss
			// without it.
			lossAt := func(name string) float64 {
				l, err := m.Forward(tokens, targets)
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Decision == DecisionPredictor && groupOf(name) != "predictor" {
					return l.CE
				}
				return l.Total
			}
			const eps = 1e-5
			worst := map[string]float64{}
			var skipped int
			p := m.Params()
			for _, tensor := range m.Layout().Tensors {
				for i := tensor.Offset; i < tensor.Offset+tensor.Size(); i++ {
					orig := p[i]
					p[i] = orig + eps
					up := lossAt(tensor.Name)
					selUp := selections(m)
					p[i] = orig - eps
					down := lossAt(tensor.Name)
					selDown := selections(m)
					p[i] = orig
					if !slices.EqualFunc(sel, selUp, slices.Equal) || !slices.EqualFunc(sel, selDown, slices.Equal) {
						skipped++ // top-k is piecewise; a flip makes the difference meaningless
						continue
					}
					numeric := (up - down) / (2 * eps)
					diff := math.Abs(numeric - analytic[i])
					scale := math.Max(math.Abs(numeric), math.Abs(analytic[i]))
					rel := diff / math.Max(scale, 1e-3)
					group := groupOf(tensor.Name)
					worst[group] = math.Max(worst[group], rel)
					if rel > 1e-6 && diff > 1e-9 {
						t.Errorf("%s[%d]: analytic %.10g, numeric %.10g (rel err %.2g)", tensor.Name, i-tensor.Offset, analytic[i], numeric, rel)
					}
				}
			}
			for _, g := range []string{"embedding", "norm", "attention", "mlp", "router"} {
				if _, ok := worst[g]; !ok {
					t.Errorf("no gradient of group %s was checked", g)
				}
			}
			if tc.decision == DecisionPredictor {
				if _, ok := worst["predictor"]; !ok {
					t.Errorf("no predictor gradient was checked")
				}
			}
			if skipped > 0 {
				t.Logf("skipped %d coordinates whose perturbation flipped a top-k choice", skipped)
			}
			for g, w := range worst {
				t.Logf("%-10s worst relative error %.2g", g, w)
			}
		})
	}
}

func groupOf(name string) string {
	switch {
	case strings.HasSuffix(name, "emb"), name == "lm_head":
		return "embedding"
	case strings.HasSuffix(name, "ln1"), strings.HasSuffix(name, "ln2"), name == "ln_f":
		return "norm"
	case strings.HasSuffix(name, "wqkv"), strings.HasSuffix(name, "wo"):
		return "attention"
	case strings.HasSuffix(name, ".w1"), strings.HasSuffix(name, ".w2"):
		return "mlp"
	case strings.HasSuffix(name, "router"):
		return "router"
	case strings.Contains(name, "pred_"):
		return "predictor"
	}
	return name
}
