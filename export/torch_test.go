package export_test

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

// pyForward is what tools/modcoord_torch.py prints.
type pyForward struct {
	Shape    []int       `json:"shape"`
	Logits   []float64   `json:"logits"`
	Selected [][][]int32 `json:"selected"` // [routed layer][row] positions
}

// goForward runs mod's model in precision F on rows of tokens: top-k
// routing as in training, or causal routing as in sampling. It returns the
// logits [rows·T·V] and, per routed layer and row, the positions processed.
func goForward[F mod.Float](cfg mod.Config, params32 []float32, rows [][]int32, causal bool) ([]float64, [][][]int32, error) {
	params := make([]F, len(params32))
	for i, v := range params32 {
		params[i] = F(v)
	}
	newModel := mod.NewModelWithParams[F]
	if causal {
		newModel = mod.NewCausalModel[F]
	}
	m, err := newModel(cfg, len(rows), params)
	if err != nil {
		return nil, nil, err
	}
	if _, err := m.Forward(slices.Concat(rows...), nil); err != nil {
		return nil, nil, err
	}
	logits := make([]float64, len(m.Logits()))
	for i, v := range m.Logits() {
		logits[i] = float64(v)
	}
	var selected [][][]int32
	for _, l := range cfg.RoutedLayers {
		var perRow [][]int32
		for b := range rows {
			perRow = append(perRow, slices.Clone(m.SelectedIn(l, b)))
		}
		selected = append(selected, perRow)
	}
	return logits, selected, nil
}

// relDiff is max|a−b| over max|b|: the error relative to the scale of the
// logits (an element-wise ratio would blow up on logits near zero).
func relDiff(a, b []float64) float64 {
	var diff, scale float64
	for i := range b {
		diff = max(diff, math.Abs(a[i]-b[i]))
		scale = max(scale, math.Abs(b[i]))
	}
	return diff / scale
}

// TestTorchLoaderMatchesGo exports a trained checkpoint, loads it with
// tools/modcoord_torch.py and checks that PyTorch computes the same logits
// as mod for the same tokens: float32 against float32 within 1e-4, and
// float64 against float64 within 1e-9, which leaves no room for a wrong
// convention hidden by float32 noise. Both must also process the same
// positions in every routed layer.
func TestTorchLoaderMatchesGo(t *testing.T) {
	py := python(t, "import torch", "torch")
	cases := []struct {
		name string
		cfg  func(mod.Config) mod.Config
	}{
		{"rope aux-loss", func(c mod.Config) mod.Config { return c }},
		{"learned positions predictor", func(c mod.Config) mod.Config {
			c.Positions, c.Decision, c.RoutedLayers, c.Capacity = mod.PositionsLearned, mod.DecisionPredictor, []int{1, 2}, 0.5
			return c
		}},
		{"dense", func(c mod.Config) mod.Config { return c.Dense() }},
	}
	runs := []struct {
		routing string
		dtype   string
		tol     float64
	}{
		{"topk", "float32", 1e-4},
		{"topk", "float64", 1e-9},
		{"causal", "float32", 1e-4},
	}
	text := corpus()
	worst := 0.0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg(tinyModel())
			_, stepDir := trainedCheckpoint(t, cfg)
			dir, ck, params := exportCheckpoint(t, stepDir)
			cfg = ck.Config.Model
			T := cfg.SeqLen
			rows := make([][]int32, 2)
			for b, off := range []int{100, 1000} {
				for _, c := range text[off : off+T] {
					rows[b] = append(rows[b], int32(c))
				}
			}
			tokJSON, err := json.Marshal(rows)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range runs {
				if r.routing == "causal" && len(cfg.RoutedLayers) == 0 {
					continue // the same computation as top-k
				}
				t.Run(r.routing+" "+r.dtype, func(t *testing.T) {
					out := runPy(t, py, nil, "tools/modcoord_torch.py", dir, "--tokens", string(tokJSON), "--routing", r.routing, "--dtype", r.dtype)
					var got pyForward
					if err := json.Unmarshal(out, &got); err != nil {
						t.Fatalf("%v in %.200s", err, out)
					}
					var want []float64
					var sel [][][]int32
					if r.dtype == "float32" {
						want, sel, err = goForward[float32](cfg, params, rows, r.routing == "causal")
					} else {
						want, sel, err = goForward[float64](cfg, params, rows, r.routing == "causal")
					}
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Equal(got.Shape, []int{len(rows), T, cfg.Vocab}) || len(got.Logits) != len(want) {
						t.Fatalf("python logits shape %v (%d values), want [%d %d %d]", got.Shape, len(got.Logits), len(rows), T, cfg.Vocab)
					}
					if fmt.Sprint(got.Selected) != fmt.Sprint(sel) {
						t.Fatalf("routed positions differ (a near-tie of router logits, or a routing bug):\npython %v\ngo     %v", got.Selected, sel)
					}
					d := relDiff(got.Logits, want)
					var routed []int
					for _, l := range sel {
						routed = append(routed, len(l[0])+len(l[1]))
					}
					t.Logf("max |logit diff| / max |logit| = %.3g over %d logits; tokens processed per routed layer %v", d, len(want), routed)
					if r.dtype == "float32" {
						worst = max(worst, d)
					}
					if !(d <= r.tol) {
						t.Errorf("python and Go logits differ by %.3g relative, over %g", d, r.tol)
					}
				})
			}
		})
	}
	t.Logf("worst float32 relative difference over all cases: %.3g", worst)
}
