package mod

// DecisionCounts compare a routed layer's causal decision (route a token or
// not, without looking ahead) with top-k membership, token by token. A
// decision that routes nothing agrees with top-k on the 1 − C of tokens
// top-k leaves out, so accuracy alone has a floor of 1 − C; precision,
// recall and F1 over the routed class have none.
type DecisionCounts struct {
	TP int `json:"tp"` // routed, and in the top-k
	FP int `json:"fp"` // routed, not in the top-k
	FN int `json:"fn"` // not routed, in the top-k
	TN int `json:"tn"` // neither
}

// Add counts one token.
func (d *DecisionCounts) Add(routed, inTopK bool) {
	switch {
	case routed && inTopK:
		d.TP++
	case routed:
		d.FP++
	case inTopK:
		d.FN++
	default:
		d.TN++
	}
}

// Tokens is how many tokens were counted.
func (d DecisionCounts) Tokens() int { return d.TP + d.FP + d.FN + d.TN }

// ratio is a/b, and 0 for 0/0 so that an empty class scores 0 rather
// than NaN (which JSON cannot carry).
func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Accuracy is the share of tokens on which decision and top-k agree.
func (d DecisionCounts) Accuracy() float64 { return ratio(d.TP+d.TN, d.Tokens()) }

// Precision is the share of routed tokens that top-k also takes; 0 when the
// decision routes nothing.
func (d DecisionCounts) Precision() float64 { return ratio(d.TP, d.TP+d.FP) }

// Recall is the share of top-k tokens the decision routes.
func (d DecisionCounts) Recall() float64 { return ratio(d.TP, d.TP+d.FN) }

// F1 is the harmonic mean of precision and recall; 0 when both are.
func (d DecisionCounts) F1() float64 { return ratio(2*d.TP, 2*d.TP+d.FP+d.FN) }

// Routed is the share of tokens the decision routes.
func (d DecisionCounts) Routed() float64 { return ratio(d.TP+d.FP, d.Tokens()) }
