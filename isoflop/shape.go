package isoflop

import (
	"fmt"
	"strconv"
	"strings"
)

// Shape is the size of one model in the family: width, depth and heads.
// Everything else (MLP width 4·d_model, vocabulary, positions) takes the
// mod package's defaults so that shapes differ only in size.
type Shape struct {
	DModel int `json:"d_model"`
	Layers int `json:"layers"`
	Heads  int `json:"heads"`
}

// String is the compact form the --shapes flag reads: d_model x layers x heads.
func (s Shape) String() string { return fmt.Sprintf("%dx%dx%d", s.DModel, s.Layers, s.Heads) }

// DefaultShapes is the size family of the sweep, smallest first: 14k,
// 41k, 80k, 131k, 230k, 492k and 853k parameters (seq_len 128, vocabulary
// 256, embeddings and LM head included), about ×1.8 a step and 60× in all.
// Width and depth grow together with the head dimension held at 16 (8 for
// the smallest) and mostly even layer counts, so that MoD routes half the
// layers. The range brackets the compute-optimal size of the default
// budgets: Chinchilla's N ≈ √(C/120) gives 50k, 91k and 158k parameters
// for 3e11, 1e12 and 3e12 FLOPs, and MoD's optimum is expected to be
// larger, so the larger shapes are there for MoD's right arm. Going
// narrower than 16 is all elementwise overhead on a CPU.
func DefaultShapes() []Shape {
	return []Shape{
		{DModel: 16, Layers: 2, Heads: 2},
		{DModel: 32, Layers: 2, Heads: 2},
		{DModel: 48, Layers: 2, Heads: 3},
		{DModel: 64, Layers: 2, Heads: 4},
		{DModel: 64, Layers: 4, Heads: 4},
		{DModel: 96, Layers: 4, Heads: 6},
		{DModel: 128, Layers: 4, Heads: 8},
	}
}

// ParseShapes reads a comma-separated list of d_model x layers x heads,
// e.g. "32x2x2,64x4x4".
func ParseShapes(s string) ([]Shape, error) {
	var out []Shape
	for _, f := range listItems(s) {
		parts := strings.Split(f, "x")
		if len(parts) != 3 {
			return nil, fmt.Errorf("--shapes: %q is not d_model x layers x heads; write e.g. 64x4x4", f)
		}
		var n [3]int
		for i, p := range parts {
			v, err := strconv.Atoi(p)
			if err != nil || v < 1 {
				return nil, fmt.Errorf("--shapes: %q: %q is not a positive integer; write e.g. 64x4x4", f, p)
			}
			n[i] = v
		}
		out = append(out, Shape{DModel: n[0], Layers: n[1], Heads: n[2]})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--shapes: no shape given; write e.g. 32x2x2,64x4x4,128x4x8")
	}
	return out, nil
}

// ShapesFlag writes shapes in the form ParseShapes reads.
func ShapesFlag(ss []Shape) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.String()
	}
	return strings.Join(parts, ",")
}

// DefaultShapesFlag is DefaultShapes as a --shapes value.
func DefaultShapesFlag() string { return ShapesFlag(DefaultShapes()) }

// listItems splits a comma-separated flag value into its trimmed,
// non-empty items.
func listItems(s string) []string {
	var items []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			items = append(items, f)
		}
	}
	return items
}
