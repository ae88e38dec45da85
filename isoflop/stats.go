package isoflop

import (
	"fmt"
	"math"
)

// Stat is the mean and sample standard deviation of one figure over the
// seeds of a (budget, shape, variant).
type Stat struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"` // sample (n − 1) standard deviation; 0 for one seed
	N    int     `json:"n"`
}

func statOf(xs []float64) Stat {
	s := Stat{N: len(xs)}
	if s.N == 0 {
		return s
	}
	for _, x := range xs {
		s.Mean += x / float64(s.N)
	}
	if s.N > 1 {
		var ss float64
		for _, x := range xs {
			ss += (x - s.Mean) * (x - s.Mean)
		}
		s.Std = math.Sqrt(ss / float64(s.N-1))
	}
	return s
}

// String is "mean ± std", or the mean alone for one seed.
func (s Stat) String() string {
	if s.N < 2 {
		return fmt.Sprintf("%.4f", s.Mean)
	}
	return fmt.Sprintf("%.4f ± %.4f", s.Mean, s.Std)
}

// Verdicts of a Comparison.
const (
	VerdictBetter  = "better, beyond the seed spread"
	VerdictWorse   = "worse, beyond the seed spread"
	VerdictWithin  = "within the seed spread"
	VerdictOneSeed = "one seed: spread unknown"
)

// Comparison is variant A's best against variant B's best at one budget.
// Delta is A's mean validation loss minus B's (negative: A is better); SE
// is the standard error of that difference, √(s_A²/n_A + s_B²/n_B). A
// difference counts as beyond the seed spread when |Delta| > 2·SE, about
// a 95% two-sided test for normal seeds (with 3 seeds a loose one: the
// t quantile is larger), and it needs at least 2 seeds of each.
type Comparison struct {
	Budget  float64 `json:"budget"`
	A       string  `json:"a"`
	AShape  string  `json:"a_shape"`
	B       string  `json:"b"`
	BShape  string  `json:"b_shape"`
	Delta   float64 `json:"delta"`
	SE      float64 `json:"se"`
	Verdict string  `json:"verdict"`
}

func compare(budget float64, a, b Group) Comparison {
	c := Comparison{Budget: budget, A: a.Variant, AShape: a.Shape, B: b.Variant, BShape: b.Shape,
		Delta: a.ValLoss.Mean - b.ValLoss.Mean}
	if a.ValLoss.N < 2 || b.ValLoss.N < 2 {
		c.Verdict = VerdictOneSeed
		return c
	}
	c.SE = math.Sqrt(a.ValLoss.Std*a.ValLoss.Std/float64(a.ValLoss.N) + b.ValLoss.Std*b.ValLoss.Std/float64(b.ValLoss.N))
	switch {
	case math.Abs(c.Delta) <= 2*c.SE:
		c.Verdict = VerdictWithin
	case c.Delta < 0:
		c.Verdict = VerdictBetter
	default:
		c.Verdict = VerdictWorse
	}
	return c
}
