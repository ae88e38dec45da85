package mod

import "fmt"

// RoutingReport evaluates a model's routing on validation data: the loss
// with top-k routing (training) and with the causal decision (sampling),
// and how well the causal decision predicts top-k membership.
type RoutingReport struct {
	ValLossTopK   float64 `json:"val_loss_topk"`
	ValLossCausal float64 `json:"val_loss_causal"`
	// DecisionAccuracy is the mean over routed layers of LayerAccuracy.
	DecisionAccuracy float64 `json:"decision_accuracy"`
	// AccuracyFloor is 1 − k/T: the accuracy of a decision that routes
	// nothing. Accuracy is only informative well above it.
	AccuracyFloor float64 `json:"accuracy_floor"`
	// DecisionPrecision, DecisionRecall and DecisionF1 are the means over
	// routed layers of LayerPrecision, LayerRecall and LayerF1.
	DecisionPrecision float64 `json:"decision_precision"`
	DecisionRecall    float64 `json:"decision_recall"`
	DecisionF1        float64 `json:"decision_f1"`
	// RoutedFraction is the mean over routed layers of LayerRouted.
	RoutedFraction float64 `json:"routed_fraction"`
	Capacity       float64 `json:"capacity"`
	RoutedLayers   []int   `json:"routed_layers"`
	// LayerAccuracy: per routed layer, the fraction of tokens whose causal
	// decision (logit > 0) agrees with top-k membership under top-k routing.
	LayerAccuracy []float64 `json:"layer_accuracy"`
	// LayerRouted: per routed layer, the fraction of tokens routed through
	// it under causal routing.
	LayerRouted []float64 `json:"layer_routed_fraction"`
	// LayerPrecision, LayerRecall, LayerF1: per routed layer, the causal
	// decision against top-k membership under top-k routing (see
	// DecisionCounts), from LayerCounts.
	LayerPrecision []float64        `json:"layer_precision"`
	LayerRecall    []float64        `json:"layer_recall"`
	LayerF1        []float64        `json:"layer_f1"`
	LayerCounts    []DecisionCounts `json:"layer_counts"`
	// ForwardFLOPs is one forward pass over one sequence with exactly k
	// tokens per routed layer (top-k); ForwardFLOPsCausal is the same at the
	// shares causal routing really routed (LayerRouted), the inference cost
	// the model implies; DenseForwardFLOPs is the same shape unrouted.
	ForwardFLOPs       float64 `json:"forward_flops"`
	ForwardFLOPsCausal float64 `json:"forward_flops_causal"`
	DenseForwardFLOPs  float64 `json:"dense_forward_flops"`
	Windows            int     `json:"windows"`
}

// EvaluateRouting runs validation windows [0, windows) (≤ 0: all) through
// the model twice, with top-k and with causal routing.
func EvaluateRouting(cfg Config, params []float32, d Data, windows, batch int) (RoutingReport, error) {
	cfg = cfg.WithDefaults()
	r := RoutingReport{Capacity: cfg.Capacity, RoutedLayers: cfg.RoutedLayers}
	T := cfg.SeqLen
	if len(cfg.RoutedLayers) > 0 {
		r.AccuracyFloor = 1 - float64(cfg.TopK())/float64(T)
	}
	total := d.ValWindows(T)
	if windows <= 0 || windows > total {
		windows = total
	}
	if windows == 0 {
		return r, fmt.Errorf("evaluate: validation split has no window of %d tokens", T+1)
	}
	r.Windows = windows
	batch = max(1, min(batch, windows))
	topk, err := NewParallelWithParams(cfg, batch, 0, params)
	if err != nil {
		return r, err
	}
	defer topk.Close()
	causal, err := NewParallelCausal(cfg, batch, 0, params)
	if err != nil {
		return r, err
	}
	defer causal.Close()

	nl := len(cfg.RoutedLayers)
	counts, routed := make([]DecisionCounts, nl), make([]int, nl)
	var tokensSeen int
	tokens, targets := make([]int32, batch*T), make([]int32, batch*T)
	ce := make([]float64, batch*T)
	member := make([]bool, T)
	var sumTopK, sumCausal float64
	for lo := 0; lo < windows; lo += batch {
		hi := min(lo+batch, windows)
		real := hi - lo
		d.ValBatch(lo, hi, T, tokens, targets)
		for row := real; row < batch; row++ { // pad with the last real window
			copy(tokens[row*T:(row+1)*T], tokens[(real-1)*T:real*T])
			copy(targets[row*T:(row+1)*T], targets[(real-1)*T:real*T])
		}
		if _, err := topk.Forward(tokens, nil); err != nil {
			return r, err
		}
		topk.RowCE(targets, ce)
		for _, v := range ce[:real*T] {
			sumTopK += v
		}
		if _, err := causal.Forward(tokens, nil); err != nil {
			return r, err
		}
		causal.RowCE(targets, ce)
		for _, v := range ce[:real*T] {
			sumCausal += v
		}
		// Per replica and real sequence: decision vs top-k, and causal counts.
		row := 0
		for ri, m := range topk.Replicas() {
			cm := causal.Replicas()[ri]
			for b := 0; b < m.Batch(); b, row = b+1, row+1 {
				if row >= real {
					break
				}
				for li, l := range cfg.RoutedLayers {
					dec := m.DecisionLogits(l)[b*T : (b+1)*T]
					clear(member)
					for _, p := range m.SelectedIn(l, b) {
						member[p] = true
					}
					for t, v := range dec {
						counts[li].Add(v > 0, member[t])
					}
					routed[li] += len(cm.SelectedIn(l, b))
				}
			}
		}
		tokensSeen += real * T
	}
	n := float64(tokensSeen)
	r.ValLossTopK, r.ValLossCausal = sumTopK/n, sumCausal/n
	for li, c := range counts {
		r.LayerCounts = append(r.LayerCounts, c)
		r.LayerAccuracy = append(r.LayerAccuracy, c.Accuracy())
		r.LayerPrecision = append(r.LayerPrecision, c.Precision())
		r.LayerRecall = append(r.LayerRecall, c.Recall())
		r.LayerF1 = append(r.LayerF1, c.F1())
		r.LayerRouted = append(r.LayerRouted, float64(routed[li])/n)
		r.DecisionAccuracy += c.Accuracy() / float64(nl)
		r.DecisionPrecision += c.Precision() / float64(nl)
		r.DecisionRecall += c.Recall() / float64(nl)
		r.DecisionF1 += c.F1() / float64(nl)
		r.RoutedFraction += float64(routed[li]) / n / float64(nl)
	}
	r.ForwardFLOPs = cfg.TrainFLOPs(1).Forward
	r.ForwardFLOPsCausal = cfg.ForwardFLOPsAtShare(r.LayerRouted)
	r.DenseForwardFLOPs = cfg.Dense().TrainFLOPs(1).Forward
	return r, nil
}
