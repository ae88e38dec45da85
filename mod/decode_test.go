package mod

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

// TestCausalRoutingIsCausal: under causal routing, changing any token after
// position t never changes the logits at positions ≤ t.
func TestCausalRoutingIsCausal(t *testing.T) {
	for _, decision := range []string{DecisionAuxLoss, DecisionPredictor} {
		cfg := tinyConfig(decision, PositionsRoPE)
		const B = 2
		T, V := cfg.SeqLen, cfg.Vocab
		params := make([]float64, NewLayout(cfg).Total)
		randomize(params, 61, 0.5)
		m, err := NewCausalModel(cfg, B, params)
		if err != nil {
			t.Fatal(err)
		}
		tokens := randomTokens(B*T, V, 7)
		if _, err := m.Forward(tokens, nil); err != nil {
			t.Fatal(err)
		}
		base := slices.Clone(m.Logits())
		r := newRNG(9, 9)
		for trial := 0; trial < 20; trial++ {
			pos := int(r.uint64() % uint64(T-1))
			changed := slices.Clone(tokens)
			for b := 0; b < B; b++ {
				for p := pos + 1; p < T; p++ {
					changed[b*T+p] = int32(r.uint64() % uint64(V))
				}
			}
			if _, err := m.Forward(changed, nil); err != nil {
				t.Fatal(err)
			}
			for b := 0; b < B; b++ {
				for p := 0; p <= pos; p++ {
					i := (b*T + p) * V
					if !slices.Equal(base[i:i+V], m.Logits()[i:i+V]) {
						t.Fatalf("%s: changing tokens after %d changed the logits at position %d of row %d", decision, pos, p, b)
					}
				}
			}
		}
	}
}

// TestTopKRoutingIsNotCausal documents why sampling needs the causal
// decision: with top-k, a future token can change an earlier position.
func TestTopKRoutingIsNotCausal(t *testing.T) {
	cfg := tinyConfig(DecisionAuxLoss, PositionsRoPE)
	T, V := cfg.SeqLen, cfg.Vocab
	m, err := NewModel[float64](cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	randomize(m.Params(), 71, 0.5)
	r := newRNG(3, 3)
	for trial := 0; trial < 200; trial++ {
		tokens := randomTokens(T, V, uint64(trial))
		if _, err := m.Forward(tokens, nil); err != nil {
			t.Fatal(err)
		}
		first := slices.Clone(m.Logits()[:V])
		tokens[T-1] = int32(r.uint64() % uint64(V))
		if _, err := m.Forward(tokens, nil); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(first, m.Logits()[:V]) {
			return // the last token changed position 0's output
		}
	}
	t.Fatal("top-k routing never let the last token affect position 0; the causality test above would prove nothing")
}

// TestDecoderMatchesFullForward: incremental decoding with the routed KV
// cache gives the logits of a full forward pass under causal routing, to
// 1e-10 relative in float64, for batch 1 and for a batch whose rows route
// differently.
func TestDecoderMatchesFullForward(t *testing.T) {
	for _, tc := range []struct {
		decision, positions string
		batch               int
	}{
		{DecisionAuxLoss, PositionsRoPE, 1},
		{DecisionAuxLoss, PositionsRoPE, 3},
		{DecisionPredictor, PositionsLearned, 3},
	} {
		t.Run(fmt.Sprintf("%s/%s/B%d", tc.decision, tc.positions, tc.batch), func(t *testing.T) {
			cfg := tinyConfig(tc.decision, tc.positions)
			B, T, V := tc.batch, cfg.SeqLen, cfg.Vocab
			params := make([]float64, NewLayout(cfg).Total)
			randomize(params, 81, 0.5)
			full, err := NewCausalModel(cfg, B, params)
			if err != nil {
				t.Fatal(err)
			}
			tokens := randomTokens(B*T, V, 17)
			if _, err := full.Forward(tokens, nil); err != nil {
				t.Fatal(err)
			}
			dec, err := NewDecoder(cfg, B, params)
			if err != nil {
				t.Fatal(err)
			}
			step := make([]int32, B)
			for p := 0; p < T; p++ {
				for b := 0; b < B; b++ {
					step[b] = tokens[b*T+p]
				}
				logits, err := dec.Step(step)
				if err != nil {
					t.Fatal(err)
				}
				for b := 0; b < B; b++ {
					want := full.Logits()[(b*T+p)*V : (b*T+p+1)*V]
					got := logits[b*V : (b+1)*V]
					for i := range got {
						if d := math.Abs(got[i] - want[i]); d > 1e-10*math.Max(1, math.Abs(want[i])) {
							t.Fatalf("row %d position %d logit %d: decoder %v, full forward %v", b, p, i, got[i], want[i])
						}
					}
				}
			}
			// The routed caches hold exactly the tokens the full pass routed.
			for l := range cfg.Layers {
				if !cfg.IsRouted(l) {
					continue
				}
				var sets [][]int32
				for b := 0; b < B; b++ {
					sel := full.SelectedIn(l, b)
					sets = append(sets, sel)
					if got := len(dec.layers[l].k[b]) / cfg.DModel; got != len(sel) {
						t.Fatalf("layer %d row %d caches %d tokens, the full pass routed %d", l, b, got, len(sel))
					}
					if len(sel) == 0 || len(sel) == T {
						t.Logf("layer %d row %d routed %d of %d tokens", l, b, len(sel), T)
					}
				}
				if B > 1 && slices.EqualFunc(sets[0], sets[1], func(a, b int32) bool { return a == b }) {
					t.Errorf("layer %d: rows 0 and 1 routed the same tokens; the test needs rows that differ", l)
				}
			}
		})
	}
}
