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
	Windows     int       `json:"windows"`
}

// EvaluateRouting runs validation windows [0, windows) (≤ 0: all) through
// the model twice, with top-k and with causal routing.
func EvaluateRouting(cfg Config, params []float32, d Data, windows, batch int) (RoutingReport, error) {
	cfg = cfg.WithDefaults()
	r := RoutingReport{Capacity: cfg.Capacity, RoutedLayers: cfg.RoutedLayers}
	T := cfg.SeqLen
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
	agree, routed := make([]int, nl), make([]int, nl)
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
						if (v > 0) == member[t] {
							agree[li]++
						}
					}
					routed[li] += len(cm.SelectedIn(l, b))
				}
			}
		}
		tokensSeen += real * T
	}
	n := float64(tokensSeen)
	r.ValLossTopK, r.ValLossCausal = sumTopK/n, sumCausal/n
	for li := range cfg.RoutedLayers {
		r.LayerAccuracy = append(r.LayerAccuracy, float64(agree[li])/n)
		r.LayerRouted = append(r.LayerRouted, float64(routed[li])/n)
		r.DecisionAccuracy += float64(agree[li]) / n / float64(nl)
		r.RoutedFraction += float64(routed[li]) / n / float64(nl)
	}
	return r, nil
}
