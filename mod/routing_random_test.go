package mod

import (
	"slices"
	"testing"
)

// TestRandomRouting checks the control's promises: exactly k tokens per
// sequence, the same choice for the same batch, a token's draw blind to
// later tokens (so the same draws can route causally), a choice that does
// not follow the router, and a causal share near C.
func TestRandomRouting(t *testing.T) {
	cfg := Config{Vocab: 32, DModel: 16, Layers: 2, Heads: 2, SeqLen: 64, Capacity: 0.25, Routing: RoutingRandom, Seed: 7}.WithDefaults()
	const B = 8
	m, err := NewModel[float32](cfg, B)
	if err != nil {
		t.Fatal(err)
	}
	tokens := randomTokens(B*cfg.SeqLen, cfg.Vocab, 3)
	if _, err := m.Forward(tokens, nil); err != nil {
		t.Fatal(err)
	}
	first := slices.Clone(m.Selected(1))
	scores := slices.Clone(m.DecisionLogits(1))
	for b := 0; b < B; b++ {
		if got := len(m.SelectedIn(1, b)); got != cfg.TopK() {
			t.Fatalf("sequence %d: %d tokens routed, want k = %d", b, got, cfg.TopK())
		}
	}

	// Another router gives the same choice: the router only weights.
	randomize(m.Params(), 5, 0.5)
	if _, err := m.Forward(tokens, nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first, m.Selected(1)) {
		t.Error("random routing chose other tokens after the weights changed")
	}

	// Changing the last token of sequence 0 leaves every earlier draw alone.
	changed := slices.Clone(tokens)
	last := cfg.SeqLen - 1
	changed[last] = (changed[last] + 1) % int32(cfg.Vocab)
	if _, err := m.Forward(changed, nil); err != nil {
		t.Fatal(err)
	}
	after := m.DecisionLogits(1)
	if !slices.Equal(scores[:last], after[:last]) {
		t.Error("a token's draw depends on a later token: random routing is not causal")
	}
	if scores[last] == after[last] {
		t.Error("the changed token kept its draw: draws do not depend on the tokens")
	}

	// Causal routing admits the tokens whose draw is in the top C: about C of them.
	cm, err := NewCausalModel[float32](cfg, B, m.Params())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cm.Forward(tokens, nil); err != nil {
		t.Fatal(err)
	}
	var routed int
	for b := 0; b < B; b++ {
		routed += len(cm.SelectedIn(1, b))
	}
	if share := float64(routed) / float64(B*cfg.SeqLen); share < 0.17 || share > 0.33 {
		t.Errorf("causal random routing routed %.3f of tokens, want about C = %.2f", share, cfg.Capacity)
	}

	// Sampling from the control is refused with a reason, not done wrong.
	if _, err := NewDecoder[float32](cfg, 1, m.Params()); err == nil {
		t.Error("NewDecoder accepted a random-routing model")
	}
}
