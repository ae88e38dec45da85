package isoflop

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// BudgetBest is the isoFLOP-optimal run of each variant at one budget.
type BudgetBest struct {
	Budget float64 `json:"budget"`
	// Best maps a variant name to its lowest-validation-loss run.
	Best map[string]Result `json:"best"`
	// AtEdge lists the variants whose best run is the smallest or largest
	// shape trained at this budget: their true optimum may lie outside the
	// family, so the comparison there is a bound, not an optimum.
	AtEdge []string `json:"at_edge,omitempty"`
	// TimedStepS is each best run's median seconds per training step from
	// the interleaved timing phase (TimeBest), where all of them ran under
	// the same load; empty when the phase was skipped.
	TimedStepS map[string]float64 `json:"timed_step_s,omitempty"`
}

// stepS is the step time the summary compares: the interleaved timing
// when there is one, else the run's own median.
func (bb BudgetBest) stepS(variant string) float64 {
	if t, ok := bb.TimedStepS[variant]; ok {
		return t
	}
	return bb.Best[variant].MedianStepS
}

// Best finds, for every budget in results, each variant's run with the
// lowest validation loss. Budgets come out in increasing order.
func Best(results []Result) []BudgetBest {
	var budgets []float64
	for _, r := range results {
		budgets = append(budgets, r.Budget)
	}
	slices.Sort(budgets)
	budgets = slices.Compact(budgets)
	out := make([]BudgetBest, 0, len(budgets))
	for _, b := range budgets {
		bb := BudgetBest{Budget: b, Best: map[string]Result{}}
		minParams, maxParams := map[string]int{}, map[string]int{}
		for _, r := range results {
			if r.Budget != b {
				continue
			}
			if cur, ok := bb.Best[r.Variant]; !ok || r.ValLoss < cur.ValLoss {
				bb.Best[r.Variant] = r
			}
			if p, ok := minParams[r.Variant]; !ok || r.Params < p {
				minParams[r.Variant] = r.Params
			}
			maxParams[r.Variant] = max(maxParams[r.Variant], r.Params)
		}
		for _, v := range sortedKeys(bb.Best) {
			p := bb.Best[v].Params
			if minParams[v] != maxParams[v] && (p == minParams[v] || p == maxParams[v]) {
				bb.AtEdge = append(bb.AtEdge, v)
			}
		}
		out = append(out, bb)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Dense first, then MoD variants by name, so tables read baseline first.
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

// WriteSummary writes summary.md: per budget, the best run of each variant,
// its loss against the best dense run's, and its cost per forward pass and
// per training step relative to the best dense run's.
func WriteSummary(w io.Writer, best []BudgetBest, skipped int) error {
	var sb strings.Builder
	sb.WriteString("# isoFLOP comparison: best run per variant per budget\n\n")
	sb.WriteString("Validation loss is mean cross-entropy in nats per byte over the whole validation split, with top-k routing as in training; ")
	sb.WriteString("\"causal\" is the same split routed by the learned causal decision, as when sampling. ")
	sb.WriteString("\"vs dense\" columns compare with the best dense run at the same budget; ")
	sb.WriteString("step time is the median wall-clock seconds per training step, from the interleaved timing phase when it ran (the best run of every variant timed in turn, under the same load), else from the run itself. ")
	sb.WriteString("A * marks a best run at the edge of the shape family (its optimum may lie outside it).\n\n")
	sb.WriteString("| budget (FLOPs) | variant | best shape | params | steps | val loss | Δ loss vs dense | causal val loss | fwd FLOPs/seq | fwd FLOPs vs dense | s/step | s/step vs dense |\n")
	sb.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, bb := range best {
		dense, hasDense := bb.Best["dense"]
		for _, v := range sortedKeys(bb.Best) {
			r := bb.Best[v]
			shape := r.Shape
			if slices.Contains(bb.AtEdge, v) {
				shape += "*"
			}
			dLoss, fwdRel, stepRel := "–", "–", "–"
			if hasDense {
				dLoss = fmt.Sprintf("%+.4f", r.ValLoss-dense.ValLoss)
				fwdRel = fmt.Sprintf("%.2f×", r.ForwardFLOPs/dense.ForwardFLOPs)
				if d := bb.stepS("dense"); d > 0 {
					stepRel = fmt.Sprintf("%.2f×", bb.stepS(v)/d)
				}
			}
			fmt.Fprintf(&sb, "| %.3g | %s | %s | %d | %d | %.4f | %s | %.4f | %.3g | %s | %.4f | %s |\n",
				bb.Budget, v, shape, r.Params, r.Steps, r.ValLoss, dLoss, r.ValLossCausal, r.ForwardFLOPs, fwdRel, bb.stepS(v), stepRel)
		}
	}
	if skipped > 0 {
		fmt.Fprintf(&sb, "\n%d planned runs were skipped: one step of their model costs more than the budget.\n", skipped)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}
