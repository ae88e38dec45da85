package isoflop

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// Group is every seed of one (budget, shape, variant): the unit the tables
// and the plot report, as mean ± standard deviation over its seeds.
type Group struct {
	Budget  float64 `json:"budget"`
	Variant string  `json:"variant"`
	Shape   string  `json:"shape"`
	// Run is the group's lowest seed, for what every seed shares (size,
	// steps, FLOPs) and to rebuild the model for timing.
	Run               Result `json:"run"`
	Seeds             []int  `json:"seeds"`
	ValLoss           Stat   `json:"val_loss"`
	ValLossCausal     Stat   `json:"val_loss_causal"`
	CausalRouted      Stat   `json:"causal_routed"`
	CausalForward     Stat   `json:"causal_forward_flops"`
	DecisionPrecision Stat   `json:"decision_precision"`
	DecisionRecall    Stat   `json:"decision_recall"`
	DecisionF1        Stat   `json:"decision_f1"`
	DecisionAccuracy  Stat   `json:"decision_accuracy"`
	runs              []Result
}

// layerMeans is the mean over seeds of a per-routed-layer figure.
func (g Group) layerMeans(of func(Result) []float64) []float64 {
	var out []float64
	for _, r := range g.runs {
		v := of(r)
		if out == nil {
			out = make([]float64, len(v))
		}
		for i := range min(len(v), len(out)) {
			out[i] += v[i] / float64(len(g.runs))
		}
	}
	return out
}

// Groups gathers results by (budget, shape, variant), in the order each
// first appears.
func Groups(results []Result) []Group {
	var out []Group
	index := map[string]int{}
	for _, r := range results {
		key := fmt.Sprintf("%g/%s/%s", r.Budget, r.Shape, r.Variant)
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, Group{Budget: r.Budget, Variant: r.Variant, Shape: r.Shape, Run: r})
		}
		g := &out[i]
		g.runs = append(g.runs, r)
		g.Seeds = append(g.Seeds, r.Seed)
		if r.Seed < g.Run.Seed {
			g.Run = r
		}
	}
	for i := range out {
		g := &out[i]
		col := func(f func(Result) float64) Stat {
			xs := make([]float64, len(g.runs))
			for j, r := range g.runs {
				xs[j] = f(r)
			}
			return statOf(xs)
		}
		g.ValLoss = col(func(r Result) float64 { return r.ValLoss })
		g.ValLossCausal = col(func(r Result) float64 { return r.ValLossCausal })
		g.CausalRouted = col(func(r Result) float64 { return r.CausalRouted })
		g.CausalForward = col(func(r Result) float64 { return r.CausalForwardFLOPs })
		g.DecisionPrecision = col(func(r Result) float64 { return r.DecisionPrecision })
		g.DecisionRecall = col(func(r Result) float64 { return r.DecisionRecall })
		g.DecisionF1 = col(func(r Result) float64 { return r.DecisionF1 })
		g.DecisionAccuracy = col(func(r Result) float64 { return r.DecisionAccuracy })
	}
	return out
}

// BudgetBest is the isoFLOP-optimal shape of each variant at one budget:
// the one with the lowest mean validation loss over its seeds.
type BudgetBest struct {
	Budget float64 `json:"budget"`
	// Best maps a variant name to its best group.
	Best map[string]Group `json:"best"`
	// AtEdge lists the variants whose best run is the smallest or largest
	// shape trained at this budget: their true optimum may lie outside the
	// family, so the comparison there is a bound, not an optimum.
	AtEdge []string `json:"at_edge,omitempty"`
	// TimedStepS is each best run's median seconds per training step from
	// the interleaved timing phase (TimeBest), where all of them ran under
	// the same load; empty when the phase was skipped.
	TimedStepS map[string]float64 `json:"timed_step_s,omitempty"`
	// Comparisons: every variant's best against dense's best, and learned
	// routing against random routing at the same capacity and layers.
	Comparisons []Comparison `json:"comparisons,omitempty"`
}

// stepS is the step time the summary compares: the interleaved timing
// when there is one, else the mean of the runs' own medians.
func (bb BudgetBest) stepS(variant string) float64 {
	if t, ok := bb.TimedStepS[variant]; ok {
		return t
	}
	g := bb.Best[variant]
	var s float64
	for _, r := range g.runs {
		s += r.MedianStepS / float64(len(g.runs))
	}
	return s
}

// Best finds, for every budget in results, each variant's shape with the
// lowest mean validation loss, and compares the variants. Budgets come out
// in increasing order.
func Best(results []Result) []BudgetBest {
	groups := Groups(results)
	var budgets []float64
	for _, g := range groups {
		budgets = append(budgets, g.Budget)
	}
	slices.Sort(budgets)
	budgets = slices.Compact(budgets)
	out := make([]BudgetBest, 0, len(budgets))
	for _, b := range budgets {
		bb := BudgetBest{Budget: b, Best: map[string]Group{}}
		minParams, maxParams := map[string]int{}, map[string]int{}
		for _, g := range groups {
			if g.Budget != b {
				continue
			}
			if cur, ok := bb.Best[g.Variant]; !ok || g.ValLoss.Mean < cur.ValLoss.Mean {
				bb.Best[g.Variant] = g
			}
			p := g.Run.Params
			if q, ok := minParams[g.Variant]; !ok || p < q {
				minParams[g.Variant] = p
			}
			maxParams[g.Variant] = max(maxParams[g.Variant], p)
		}
		for _, v := range sortedKeys(bb.Best) {
			p := bb.Best[v].Run.Params
			if minParams[v] != maxParams[v] && (p == minParams[v] || p == maxParams[v]) {
				bb.AtEdge = append(bb.AtEdge, v)
			}
		}
		bb.Comparisons = comparisons(bb)
		out = append(out, bb)
	}
	return out
}

// comparisons lists each variant's best against dense's, then each random
// variant's learned counterpart against it.
func comparisons(bb BudgetBest) []Comparison {
	var out []Comparison
	dense, hasDense := bb.Best["dense"]
	for _, v := range sortedKeys(bb.Best) {
		if v != "dense" && hasDense {
			out = append(out, compare(bb.Budget, bb.Best[v], dense))
		}
	}
	for _, v := range sortedKeys(bb.Best) {
		if learned, ok := strings.CutPrefix(v, "random-"); ok {
			if l, ok := bb.Best["mod-"+learned]; ok {
				out = append(out, compare(bb.Budget, l, bb.Best[v]))
			}
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Dense first, then the other variants by name, so tables read baseline first.
	slices.SortFunc(keys, func(a, b string) int {
		if (a == "dense") != (b == "dense") {
			if a == "dense" {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	return keys
}

// pct writes a share as a percentage with one decimal.
func pct(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

// joinLayers writes a per-layer figure as "a / b / c".
func joinLayers(xs []float64, f func(float64) string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = f(x)
	}
	return strings.Join(parts, " / ")
}

// WriteSummary writes summary.md: per budget, the best shape of each
// variant (mean ± std over seeds), its loss against the best dense
// shape's with a verdict against the seed spread, its cost per forward
// pass and per training step; the causal decision's quality per routed
// layer; and every (budget, shape, variant).
func WriteSummary(w io.Writer, best []BudgetBest, results []Result, skipped int) error {
	var sb strings.Builder
	sb.WriteString("# isoFLOP comparison: best shape per variant per budget\n\n")
	sb.WriteString("Validation loss is mean cross-entropy in nats per byte over the whole validation split, with top-k routing as in training, as mean ± sample standard deviation over the seeds; ")
	sb.WriteString("\"causal\" is the same split routed by the learned causal decision, as when sampling. ")
	sb.WriteString("The best shape of a variant is the one with the lowest mean. ")
	sb.WriteString("\"vs dense\" columns compare with the best dense shape at the same budget; Δ is given ± its standard error √(s²/n + s²/n). ")
	sb.WriteString("\"causal fwd\" is the forward cost at the share of tokens causal routing really routed. ")
	sb.WriteString("Step time is the median wall-clock seconds per training step, from the interleaved timing phase when it ran (the best run of every variant timed in turn, under the same load), else from the runs themselves. ")
	sb.WriteString("A * marks a best shape at the edge of the family (its optimum may lie outside it).\n\n")
	sb.WriteString("| budget (FLOPs) | variant | best shape | params | seeds | steps | val loss | Δ loss vs dense | causal val loss | fwd FLOPs/seq | fwd FLOPs vs dense | causal fwd vs dense | s/step | s/step vs dense |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, bb := range best {
		dense, hasDense := bb.Best["dense"]
		for _, v := range sortedKeys(bb.Best) {
			g := bb.Best[v]
			r := g.Run
			shape := g.Shape
			if slices.Contains(bb.AtEdge, v) {
				shape += "*"
			}
			dLoss, fwdRel, causalRel, stepRel := "–", "–", "–", "–"
			if hasDense {
				if v != "dense" {
					c := compare(bb.Budget, g, dense)
					dLoss = fmt.Sprintf("%+.4f", c.Delta)
					if c.Verdict != VerdictOneSeed {
						dLoss += fmt.Sprintf(" ± %.4f", c.SE)
					}
				}
				fwdRel = fmt.Sprintf("%.2f×", r.ForwardFLOPs/dense.Run.ForwardFLOPs)
				causalRel = fmt.Sprintf("%.2f×", g.CausalForward.Mean/dense.Run.ForwardFLOPs)
				if d := bb.stepS("dense"); d > 0 {
					stepRel = fmt.Sprintf("%.2f×", bb.stepS(v)/d)
				}
			}
			fmt.Fprintf(&sb, "| %.3g | %s | %s | %d | %d | %d | %s | %s | %s | %.3g | %s | %s | %.4f | %s |\n",
				bb.Budget, v, shape, r.Params, len(g.Seeds), r.Steps, g.ValLoss, dLoss, g.ValLossCausal, r.ForwardFLOPs, fwdRel, causalRel, bb.stepS(v), stepRel)
		}
	}
	if skipped > 0 {
		fmt.Fprintf(&sb, "\n%d planned runs were skipped: one step of their model costs more than the budget.\n", skipped)
	}

	sb.WriteString("\n## Claims against the seed spread\n\n")
	sb.WriteString("A difference counts as beyond the seed spread when |Δ| > 2·SE (and each side has at least 2 seeds).\n\n")
	for _, bb := range best {
		for _, c := range bb.Comparisons {
			fmt.Fprintf(&sb, "- %.3g: %s (%s) vs %s (%s): Δ %+.4f", c.Budget, c.A, c.AShape, c.B, c.BShape, c.Delta)
			if c.Verdict != VerdictOneSeed {
				fmt.Fprintf(&sb, ", 2·SE %.4f", 2*c.SE)
			}
			fmt.Fprintf(&sb, ": %s\n", c.Verdict)
		}
	}

	sb.WriteString("\n## The causal decision of the best shapes, per routed layer\n\n")
	sb.WriteString("The causal decision (route a token when its decision logit is > 0, without looking ahead) against top-k membership, on the validation split under top-k routing, means over seeds. ")
	sb.WriteString("Accuracy has a floor: a decision that routes nothing scores 1 − k/T; precision, recall and F1 over the routed tokens have none. ")
	sb.WriteString("\"routed\" is the share of tokens causal routing really sent through the layer (the target is the capacity). Layers are listed in order, separated by /. ")
	sb.WriteString("For random routing the decision is the same random draws thresholded at 1 − C, so its agreement with top-k is by construction: nothing was learned.\n\n")
	sb.WriteString("| budget (FLOPs) | variant | shape | routed layers | precision | recall | F1 | accuracy | accuracy floor | routed (causal) |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, bb := range best {
		for _, v := range sortedKeys(bb.Best) {
			g := bb.Best[v]
			if len(g.Run.RoutedLayers) == 0 {
				continue
			}
			layers := make([]string, len(g.Run.RoutedLayers))
			for i, l := range g.Run.RoutedLayers {
				layers[i] = fmt.Sprint(l)
			}
			fmt.Fprintf(&sb, "| %.3g | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", bb.Budget, v, g.Shape, strings.Join(layers, " / "),
				joinLayers(g.layerMeans(func(r Result) []float64 { return r.LayerPrecision }), pct),
				joinLayers(g.layerMeans(func(r Result) []float64 { return r.LayerRecall }), pct),
				joinLayers(g.layerMeans(func(r Result) []float64 { return r.LayerF1 }), pct),
				joinLayers(g.layerMeans(func(r Result) []float64 { return r.LayerAccuracy }), pct),
				pct(g.Run.AccuracyFloor),
				joinLayers(g.layerMeans(func(r Result) []float64 { return r.LayerRouted }), pct))
		}
	}

	sb.WriteString("\n## Every shape and variant\n\n")
	sb.WriteString("| budget (FLOPs) | shape | variant | params | seeds | val loss | causal val loss | decision recall | decision precision | routed (causal) |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, g := range Groups(results) {
		recall, precision, routed := "–", "–", "–"
		if len(g.Run.RoutedLayers) > 0 {
			recall, precision, routed = pct(g.DecisionRecall.Mean), pct(g.DecisionPrecision.Mean), pct(g.CausalRouted.Mean)
		}
		fmt.Fprintf(&sb, "| %.3g | %s | %s | %d | %d | %s | %s | %s | %s | %s |\n",
			g.Budget, g.Shape, g.Variant, g.Run.Params, len(g.Seeds), g.ValLoss, g.ValLossCausal, recall, precision, routed)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}
