package isoflop

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/modcoord/modcoord/mod"
)

// Variant is one kind of model compared at each budget. Its name says
// everything about it, so that a run recorded in runs.json can be rebuilt
// from its name alone (ParseVariant): "dense", or
// "<mod|random>-c<capacity>[-every]", or "mod-c<capacity>[-every]-predictor".
type Variant struct {
	Name string `json:"name"`
	// Capacity is the fraction of each sequence a routed layer processes;
	// 0 means dense.
	Capacity float64 `json:"capacity"`
	// Random routes k tokens drawn at random instead of the top-k router
	// logits: the paper's control for learned routing.
	Random bool `json:"random,omitempty"`
	// Every routes every layer instead of every other layer (1, 3, ...).
	Every bool `json:"every,omitempty"`
	// Predictor learns the causal decision with the small stop-gradient
	// predictor MLP instead of the aux loss on the router's own logits:
	// the same top-k routing in training, but no decision loss reaches the
	// router or the layers below it. It separates what learned routing
	// gains from what the aux loss costs.
	Predictor bool `json:"predictor,omitempty"`
}

// Dense reports whether the variant has no routed layers.
func (v Variant) Dense() bool { return v.Capacity == 0 }

// DefaultVariants are the paper's comparison: a dense baseline and MoD on
// every other layer at capacity 12.5% (the paper's best) and 50%.
func DefaultVariants() []Variant {
	return []Variant{
		{Name: "dense"},
		{Name: "mod-c0.125", Capacity: 0.125},
		{Name: "mod-c0.5", Capacity: 0.5},
	}
}

// DefaultVariantsFlag is DefaultVariants as a --variants value.
const DefaultVariantsFlag = "dense,mod-c0.125,mod-c0.5"

// ParseVariant reads one variant name: "dense", or "mod-c0.125",
// "random-c0.125", "mod-c0.5-every", "mod-c0.125-predictor" (routing,
// capacity, "-every" for routing every layer rather than every other one,
// and "-predictor" for learning the causal decision with the stop-gradient
// predictor rather than the aux loss).
func ParseVariant(name string) (Variant, error) {
	if name == "dense" {
		return Variant{Name: name}, nil
	}
	bad := fmt.Errorf("variant %q: want dense, or mod-c<C> / random-c<C> with 0 < C ≤ 1, an optional -every suffix, and for mod an optional -predictor suffix after it (e.g. mod-c0.125, random-c0.125, mod-c0.125-every, mod-c0.125-predictor)", name)
	rest, predictor := strings.CutSuffix(name, "-predictor")
	rest, every := strings.CutSuffix(rest, "-every")
	var v Variant
	switch {
	case strings.HasPrefix(rest, "mod-c"):
		rest = strings.TrimPrefix(rest, "mod-c")
	case strings.HasPrefix(rest, "random-c") && !predictor: // random routing learns no decision
		rest, v.Random = strings.TrimPrefix(rest, "random-c"), true
	default:
		return v, bad
	}
	c, err := strconv.ParseFloat(rest, 64)
	if err != nil || !(c > 0 && c <= 1) {
		return v, bad
	}
	v.Name, v.Capacity, v.Every, v.Predictor = name, c, every, predictor
	return v, nil
}

// ParseVariants reads a comma-separated --variants list.
func ParseVariants(s string) ([]Variant, error) {
	var out []Variant
	seen := map[string]bool{}
	for _, f := range listItems(s) {
		v, err := ParseVariant(f)
		if err != nil {
			return nil, fmt.Errorf("--variants: %w", err)
		}
		if seen[f] {
			return nil, fmt.Errorf("--variants: %q is listed twice", f)
		}
		seen[f] = true
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--variants: no variant given; write e.g. --variants %s", DefaultVariantsFlag)
	}
	return out, nil
}

// ModelConfig is the mod.Config of shape s in variant v at sequence length
// seqLen, initialised from seed.
func ModelConfig(s Shape, v Variant, seqLen int, seed int) mod.Config {
	c := mod.Config{
		DModel: s.DModel, Layers: s.Layers, Heads: s.Heads, SeqLen: seqLen,
		Seed: uint64(seed),
	}
	if v.Dense() {
		return c.WithDefaults().Dense()
	}
	c.Capacity = v.Capacity
	if v.Random {
		c.Routing = mod.RoutingRandom
	}
	if v.Predictor {
		c.Decision = mod.DecisionPredictor
	}
	if v.Every {
		c.RoutedLayers = make([]int, s.Layers)
		for l := range c.RoutedLayers {
			c.RoutedLayers[l] = l
		}
	}
	return c.WithDefaults() // nil routed layers: every other layer from 1
}
