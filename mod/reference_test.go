package mod

import (
	"encoding/json"
	"math"
	"os"
	"slices"
	"testing"
)

// referenceCase is one golden case written by tools/torch_reference.py: a
// tiny model's weights, a batch, and PyTorch's (float64, autograd) loss,
// routing and gradients.
type referenceCase struct {
	Name   string `json:"name"`
	Config Config `json:"config"`
	Batch  int    `json:"batch"`
	Layout []struct {
		Name   string `json:"name"`
		Shape  []int  `json:"shape"`
		Offset int    `json:"offset"`
	} `json:"layout"`
	Params         []float64   `json:"params"`
	Tokens         [][]int32   `json:"tokens"`
	Targets        [][]int32   `json:"targets"`
	Loss           float64     `json:"loss"`
	CE             float64     `json:"ce"`
	BCE            []float64   `json:"bce"`
	Selected       [][][]int32 `json:"selected"`
	LogitsChecksum float64     `json:"logits_checksum"`
	Grads          []float64   `json:"grads"`
}

// TestMatchesPyTorchReference runs each golden case through the float64
// model and requires the loss, every BCE term and every gradient to match
// PyTorch to 1e-9 relative (absolute 1e-11 for gradients near zero), and the
// routing to match exactly. The Go code shares nothing with the script but
// the written definition of the model.
func TestMatchesPyTorchReference(t *testing.T) {
	raw, err := os.ReadFile("../testdata/mod_reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Cases []referenceCase `json:"cases"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Cases) == 0 {
		t.Fatal("no golden cases in testdata/mod_reference.json")
	}
	for _, rc := range file.Cases {
		t.Run(rc.Name, func(t *testing.T) {
			cfg := rc.Config
			if cfg.RoutedLayers == nil {
				cfg.RoutedLayers = []int{}
			}
			m, err := NewModelWithParams(cfg, rc.Batch, slices.Clone(rc.Params))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range rc.Layout {
				got, ok := m.Layout().Lookup(want.Name)
				if !ok || got.Offset != want.Offset || !slices.Equal(got.Shape, want.Shape) {
					t.Fatalf("layout of %s: Go %+v, reference %+v", want.Name, got, want)
				}
			}
			loss, err := m.Forward(slices.Concat(rc.Tokens...), slices.Concat(rc.Targets...))
			if err != nil {
				t.Fatal(err)
			}
			closeTo := func(what string, got, want, abs float64) {
				t.Helper()
				if d := math.Abs(got - want); d > 1e-9*math.Abs(want) && d > abs {
					t.Errorf("%s: Go %.15g, PyTorch %.15g (diff %.2g)", what, got, want, d)
				}
			}
			closeTo("loss", loss.Total, rc.Loss, 0)
			closeTo("ce", loss.CE, rc.CE, 0)
			for i := range rc.BCE {
				closeTo("bce", loss.BCE[i], rc.BCE[i], 0)
			}
			var sum float64
			for _, v := range m.Logits() {
				sum += v
			}
			closeTo("logits checksum", sum, rc.LogitsChecksum, 1e-9)
			for i, l := range cfg.RoutedLayers {
				if got, want := m.Selected(l), slices.Concat(rc.Selected[i]...); !slices.Equal(got, want) {
					t.Errorf("layer %d selected %v, PyTorch %v", l, got, want)
				}
			}
			if err := m.Backward(); err != nil {
				t.Fatal(err)
			}
			var worst float64
			for i, g := range m.Grads() {
				want := rc.Grads[i]
				d := math.Abs(g - want)
				if d > 1e-9*math.Abs(want) && d > 1e-11 {
					t.Errorf("grad[%d]: Go %.15g, PyTorch %.15g", i, g, want)
				}
				if want != 0 {
					worst = math.Max(worst, d/math.Abs(want))
				}
			}
			t.Logf("%d gradients; worst relative difference %.2g", len(rc.Grads), worst)
		})
	}
}
