package isoflop

import (
	"fmt"
	"math"
	"slices"
	"strconv"
)

// DefaultBudgets is the full sweep `modcoord isoflop` runs when --budgets
// is not given, in training FLOPs per run. See docs/results.md for how they
// were sized to this machine; CIBudget is the smallest, sized for CI.
const DefaultBudgets = "3e11,1e12,3e12"

// CIBudget is the smallest default budget: its 21 runs (7 shapes × 3
// variants) finish in a few minutes on two cores, so CI runs it as a
// pipeline check (.ci/isoflop.sh).
const CIBudget = "3e11"

// ParseBudgets reads a comma-separated list of FLOP budgets ("3e11,1e12"),
// returned in increasing order without duplicates.
func ParseBudgets(s string) ([]float64, error) {
	var out []float64
	for _, f := range listItems(s) {
		b, err := strconv.ParseFloat(f, 64)
		if err != nil || math.IsNaN(b) || math.IsInf(b, 0) || b <= 0 {
			return nil, fmt.Errorf("--budgets: %q is not a positive number of FLOPs; write e.g. --budgets %s", f, DefaultBudgets)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--budgets: no budget given; write e.g. --budgets %s", DefaultBudgets)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
