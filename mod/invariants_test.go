package mod

import (
	"math"
	"slices"
	"testing"
)

func forwardRandom(t *testing.T, cfg Config, B int, seed uint64) *Model[float64] {
	t.Helper()
	m, err := NewModel[float64](cfg, B)
	if err != nil {
		t.Fatal(err)
	}
	randomize(m.Params(), seed, 0.5)
	N := B * cfg.SeqLen
	if _, err := m.Forward(randomTokens(N, cfg.Vocab, seed+1), randomTokens(N, cfg.Vocab, seed+2)); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestExactlyKTokensPerSequence(t *testing.T) {
	for _, capacity := range []float64{0.125, 0.25, 0.5, 0.3, 1} {
		cfg := tinyConfig(DecisionAuxLoss, PositionsRoPE)
		cfg.SeqLen, cfg.Capacity = 16, capacity
		const B = 3
		m := forwardRandom(t, cfg, B, 21)
		k := int(math.Floor(capacity * 16))
		for _, l := range cfg.RoutedLayers {
			sel := m.Selected(l)
			if len(sel) != B*k {
				t.Fatalf("C=%v layer %d: %d selected, want %d per sequence × %d", capacity, l, len(sel), k, B)
			}
			z := m.RouterLogits(l)
			for b := 0; b < B; b++ {
				s := sel[b*k : (b+1)*k]
				if !slices.IsSorted(s) || len(slices.Compact(slices.Clone(s))) != k {
					t.Fatalf("C=%v layer %d seq %d: selection %v is not k distinct ascending positions", capacity, l, b, s)
				}
				// Independent top-k: every selected logit ≥ every unselected one.
				zs := z[b*16 : (b+1)*16]
				minSel := math.Inf(1)
				for _, p := range s {
					minSel = math.Min(minSel, zs[p])
				}
				for p := int32(0); p < 16; p++ {
					if !slices.Contains(s, p) && zs[p] > minSel {
						t.Fatalf("C=%v layer %d seq %d: unselected position %d has logit %v above a selected %v", capacity, l, b, p, zs[p], minSel)
					}
				}
			}
		}
	}
}

func TestTopKTiesBreakToEarlierPosition(t *testing.T) {
	cfg := tinyConfig(DecisionAuxLoss, PositionsRoPE)
	m, err := NewModel[float64](cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	// A zero router gives every token the same logit: the first k win.
	for _, l := range cfg.RoutedLayers {
		clear(m.layers[l].param.router)
	}
	if _, err := m.Forward(randomTokens(cfg.SeqLen, cfg.Vocab, 1), nil); err != nil {
		t.Fatal(err)
	}
	want := []int32{0, 1, 2, 3}
	for _, l := range cfg.RoutedLayers {
		if got := m.Selected(l); !slices.Equal(got, want) {
			t.Fatalf("layer %d selected %v with all logits tied, want %v", l, got, want)
		}
	}
}

// TestAllSelectedAtWeightOneEqualsDense: with capacity 1 and every router
// forced to weight 1, the MoD model computes exactly the dense model.
func TestAllSelectedAtWeightOneEqualsDense(t *testing.T) {
	cfg := tinyConfig(DecisionAuxLoss, PositionsRoPE)
	cfg.Capacity = 1
	cfg.RoutedLayers = []int{0, 1, 2}
	const B = 2
	routed := forwardRandom(t, cfg, B, 31)
	routed.forceAllWeightOne = true
	dense, err := NewModel[float64](cfg.Dense(), B)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range dense.Layout().Tensors {
		src, _ := routed.Layout().Lookup(tn.Name)
		copy(dense.Params()[tn.Offset:tn.Offset+tn.Size()], routed.Params()[src.Offset:src.Offset+src.Size()])
	}
	N := B * cfg.SeqLen
	tokens, targets := randomTokens(N, cfg.Vocab, 4), randomTokens(N, cfg.Vocab, 5)
	lr, err := routed.Forward(tokens, targets)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := dense.Forward(tokens, targets)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range dense.Logits() {
		if d := math.Abs(v - routed.Logits()[i]); d > 1e-12 {
			t.Fatalf("logit %d: dense %v, all-routed %v (diff %g)", i, v, routed.Logits()[i], d)
		}
	}
	if math.Abs(lr.CE-ld.CE) > 1e-12 {
		t.Fatalf("cross-entropy: dense %v, all-routed %v", ld.CE, lr.CE)
	}
}

// TestUnselectedTokenDoesNotLeak: perturbing a token a routed layer skipped
// (keeping it skipped) leaves the layer's outputs at every other position
// bit-identical, and that token's output equals its input.
func TestUnselectedTokenDoesNotLeak(t *testing.T) {
	cfg := tinyConfig(DecisionAuxLoss, PositionsRoPE)
	const B = 2
	m := forwardRandom(t, cfg, B, 41)
	l := cfg.RoutedLayers[0]
	ly := &m.layers[l]
	T, D := cfg.SeqLen, cfg.DModel
	sel := slices.Clone(ly.routing.selected)
	before := slices.Clone(ly.out)
	// First unselected position of sequence 1.
	u := -1
	for p := int32(0); p < int32(T); p++ {
		if !slices.Contains(sel[ly.seqTokens:2*ly.seqTokens], p) {
			u = T + int(p)
			break
		}
	}
	// Move x_u against the router so its logit only falls, plus noise.
	r := newRNG(5, 5)
	for c := 0; c < D; c++ {
		ly.in[u*D+c] += -2*ly.param.router[c] + 0.3*r.normal()
	}
	ly.forward(m)
	if !slices.Equal(sel, ly.routing.selected) {
		t.Fatalf("the perturbation changed the selection; the test needs it fixed")
	}
	for p := 0; p < B*T; p++ {
		got, want := ly.out[p*D:(p+1)*D], before[p*D:(p+1)*D]
		if p == u {
			if !slices.Equal(got, ly.in[p*D:(p+1)*D]) {
				t.Fatalf("unselected token %d: output %v differs from its input", p, got)
			}
			continue
		}
		if !slices.Equal(got, want) {
			t.Fatalf("position %d changed when unselected token %d did", p, u)
		}
	}
}

// TestRoutedLayerMatchesNaiveReference recomputes a routed layer with
// plain loops straight from the paper's definition — top-k, original order,
// RoPE at original positions, causal attention among the selected only,
// x + σ(z)·f — and compares it with the model's layer.
func TestRoutedLayerMatchesNaiveReference(t *testing.T) {
	cfg := tinyConfig(DecisionAuxLoss, PositionsRoPE)
	const B = 2
	m := forwardRandom(t, cfg, B, 51)
	for _, l := range cfg.RoutedLayers {
		ly := &m.layers[l]
		want := naiveRoutedLayer(cfg, B, ly.in, ly.param.router, ly.param.ln1, ly.param.wqkv, ly.param.wo, ly.param.ln2, ly.param.w1, ly.param.w2)
		for i := range want {
			if d := math.Abs(want[i] - ly.out[i]); d > 1e-12 {
				t.Fatalf("layer %d output[%d] = %v, naive reference %v", l, i, ly.out[i], want[i])
			}
		}
	}
}

func naiveRoutedLayer(cfg Config, B int, x, router, ln1, wqkv, wo, ln2, w1, w2 []float64) []float64 {
	T, D, H, hd, Fh := cfg.SeqLen, cfg.DModel, cfg.Heads, cfg.HeadDim(), cfg.MLPHidden
	k := int(math.Floor(cfg.Capacity * float64(T)))
	out := slices.Clone(x)
	norm := func(v, w []float64) []float64 {
		var ss float64
		for _, a := range v {
			ss += a * a
		}
		s := 1 / math.Sqrt(ss/float64(len(v))+cfg.NormEps)
		o := make([]float64, len(v))
		for i := range v {
			o[i] = v[i] * s * w[i]
		}
		return o
	}
	matvec := func(v, w []float64, in, outN int) []float64 {
		o := make([]float64, outN)
		for j := 0; j < outN; j++ {
			for i := 0; i < in; i++ {
				o[j] += v[i] * w[i*outN+j]
			}
		}
		return o
	}
	rope := func(v []float64, pos int) {
		for j := 0; j < hd/2; j++ {
			ang := float64(pos) * math.Pow(cfg.RoPETheta, -2*float64(j)/float64(hd))
			a, b := v[j], v[j+hd/2]
			v[j], v[j+hd/2] = a*math.Cos(ang)-b*math.Sin(ang), a*math.Sin(ang)+b*math.Cos(ang)
		}
	}
	for b := 0; b < B; b++ {
		z := make([]float64, T)
		idx := make([]int, T)
		for t := 0; t < T; t++ {
			z[t] = dot(x[(b*T+t)*D:(b*T+t+1)*D], router)
			idx[t] = t
		}
		slices.SortStableFunc(idx, func(i, j int) int {
			if z[i] > z[j] {
				return -1
			} else if z[i] < z[j] {
				return 1
			}
			return 0
		})
		sel := slices.Clone(idx[:k])
		slices.Sort(sel)
		q, kk, v := make([][]float64, k), make([][]float64, k), make([][]float64, k)
		for j, t := range sel {
			qkv := matvec(norm(x[(b*T+t)*D:(b*T+t+1)*D], ln1), wqkv, D, 3*D)
			q[j], kk[j], v[j] = qkv[:D], qkv[D:2*D], qkv[2*D:]
			for h := 0; h < H; h++ {
				rope(q[j][h*hd:(h+1)*hd], t)
				rope(kk[j][h*hd:(h+1)*hd], t)
			}
		}
		for i, t := range sel {
			o := make([]float64, D)
			for h := 0; h < H; h++ {
				sc := make([]float64, i+1)
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					sc[j] = dot(q[i][h*hd:(h+1)*hd], kk[j][h*hd:(h+1)*hd]) / math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for c := 0; c < hd; c++ {
						o[h*hd+c] += sc[j] / sum * v[j][h*hd+c]
					}
				}
			}
			xi := x[(b*T+t)*D : (b*T+t+1)*D]
			a := matvec(o, wo, D, D)
			hh := make([]float64, D)
			for c := range hh {
				hh[c] = xi[c] + a[c]
			}
			g := matvec(norm(hh, ln2), w1, D, Fh)
			for c, u := range g {
				g[c] = 0.5 * u * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(u+0.044715*u*u*u)))
			}
			mlp := matvec(g, w2, Fh, D)
			r := 1 / (1 + math.Exp(-z[t]))
			for c := 0; c < D; c++ {
				out[(b*T+t)*D+c] = xi[c] + r*(a[c]+mlp[c])
			}
		}
	}
	return out
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func TestEveryRouterReceivesGradient(t *testing.T) {
	for _, decision := range []string{DecisionAuxLoss, DecisionPredictor} {
		cfg := tinyConfig(decision, PositionsRoPE)
		cfg.Layers, cfg.RoutedLayers = 4, nil
		cfg = cfg.WithDefaults() // layers 1 and 3
		m, err := NewModel[float64](cfg, 2)
		if err != nil {
			t.Fatal(err)
		}
		N := 2 * cfg.SeqLen
		if _, err := m.Forward(randomTokens(N, cfg.Vocab, 1), randomTokens(N, cfg.Vocab, 2)); err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		for _, l := range cfg.RoutedLayers {
			var n2 float64
			for _, g := range m.layers[l].grad.router {
				n2 += g * g
			}
			if !(n2 > 0) {
				t.Errorf("%s: router of layer %d received no gradient", decision, l)
			}
		}
	}
}
