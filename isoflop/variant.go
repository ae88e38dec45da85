package isoflop

import "github.com/modcoord/modcoord/mod"

// Variant is one kind of model compared at each budget.
type Variant struct {
	Name string `json:"name"`
	// Capacity is the fraction of each sequence a routed layer processes;
	// 0 means dense.
	Capacity float64 `json:"capacity"`
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

// ModelConfig is the mod.Config of shape s in variant v at sequence length
// seqLen. Every run uses the same initialisation seed.
func ModelConfig(s Shape, v Variant, seqLen int) mod.Config {
	c := mod.Config{
		DModel: s.DModel, Layers: s.Layers, Heads: s.Heads, SeqLen: seqLen,
		Seed: 1,
	}
	if v.Dense() {
		return c.WithDefaults().Dense()
	}
	c.Capacity = v.Capacity
	return c.WithDefaults() // nil routed layers: every other layer from 1
}
