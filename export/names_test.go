package export_test

import (
	"testing"

	"github.com/modcoord/modcoord/export"
	"github.com/modcoord/modcoord/mod"
)

func TestName(t *testing.T) {
	for _, tc := range []struct {
		mod, want string
		bad       bool
	}{
		{mod: "tok_emb", want: "tok_emb.weight"},
		{mod: "pos_emb", want: "pos_emb.weight"},
		{mod: "layer0.ln1", want: "layers.0.attn_norm.weight"},
		{mod: "layer3.wqkv", want: "layers.3.attn.wqkv"},
		{mod: "layer3.wo", want: "layers.3.attn.wo"},
		{mod: "layer12.ln2", want: "layers.12.mlp_norm.weight"},
		{mod: "layer1.w1", want: "layers.1.mlp.w1"},
		{mod: "layer1.w2", want: "layers.1.mlp.w2"},
		{mod: "layer1.router", want: "layers.1.router"},
		{mod: "layer1.pred_w1", want: "layers.1.predictor.w1"},
		{mod: "layer1.pred_b1", want: "layers.1.predictor.b1"},
		{mod: "layer1.pred_w2", want: "layers.1.predictor.w2"},
		{mod: "layer1.pred_b2", want: "layers.1.predictor.b2"},
		{mod: "ln_f", want: "norm_f.weight"},
		{mod: "lm_head", want: "lm_head"},
		{mod: "layer1.unknown", bad: true},
		{mod: "layer01.w1", bad: true},
		{mod: "layer-1.w1", bad: true},
		{mod: "layerx.w1", bad: true},
		{mod: "layer1", bad: true},
		{mod: "something", bad: true},
		{mod: "", bad: true},
	} {
		got, err := export.Name(tc.mod)
		if tc.bad {
			if err == nil {
				t.Errorf("Name(%q) = %q, want an error", tc.mod, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Name(%q) = %q, %v; want %q", tc.mod, got, err, tc.want)
		}
	}
}

// TestEveryLayoutTensorIsNamed checks that every tensor of every kind of
// layout has an exported name, with no two alike.
func TestEveryLayoutTensorIsNamed(t *testing.T) {
	for _, cfg := range []mod.Config{
		tinyModel(),
		tinyModel().Dense(),
		func() mod.Config {
			c := tinyModel()
			c.Positions, c.Decision, c.RoutedLayers = mod.PositionsLearned, mod.DecisionPredictor, []int{0, 1, 2, 3}
			return c
		}(),
	} {
		tensors, err := export.Tensors(cfg, make([]float32, mod.NewLayout(cfg).Total))
		if err != nil {
			t.Fatalf("%s: %v", cfg, err)
		}
		seen := map[string]bool{}
		for _, tn := range tensors {
			if seen[tn.Name] {
				t.Errorf("%s: %s exported twice", cfg, tn.Name)
			}
			seen[tn.Name] = true
		}
	}
	random := tinyModel()
	random.Routing = mod.RoutingRandom
	if _, err := export.Tensors(random, make([]float32, mod.NewLayout(random).Total)); err == nil {
		t.Error("exported a random-routing control, which the PyTorch loader would route by its logits")
	}
	if _, err := export.Tensors(tinyModel(), make([]float32, 3)); err == nil {
		t.Error("Tensors accepted a parameter vector of the wrong length")
	}
}
