package isoflop

import "github.com/modcoord/modcoord/mod"

// Result is one finished run: what was trained, what it cost and how well
// it does. Field names are the columns of runs.csv and keys of runs.json.
type Result struct {
	Budget    float64 `json:"budget"`
	Variant   string  `json:"variant"`
	Capacity  float64 `json:"capacity"`
	Shape     string  `json:"shape"`
	Seed      int     `json:"seed"` // initialisation and data order
	DModel    int     `json:"d_model"`
	Layers    int     `json:"layers"`
	Heads     int     `json:"heads"`
	SeqLen    int     `json:"seq_len"`
	Batch     int     `json:"batch"`
	Params    int     `json:"params"`     // every trained parameter
	NonEmbed  int     `json:"non_embed"`  // params less the token embedding
	Steps     int     `json:"steps"`      // floor(budget / flops_per_step)
	StepFLOPs float64 `json:"step_flops"` // one training step, forward and backward
	FLOPs     float64 `json:"flops"`      // steps · step_flops, ≤ budget
	// ForwardFLOPs is one forward pass over one sequence of seq_len tokens:
	// the inference cost MoD is meant to cut.
	ForwardFLOPs float64 `json:"forward_flops"`
	TrainLoss    float64 `json:"train_loss"` // mean cross-entropy of the last 10% of steps
	ValLoss      float64 `json:"val_loss"`   // whole validation split, nats per byte, top-k routing
	// ValLossCausal is the same split routed by the learned causal decision
	// (router logit > 0), as at sampling time; equal to ValLoss for dense.
	ValLossCausal float64 `json:"val_loss_causal"`
	// CausalRouted is the fraction of tokens the routed layers processed
	// under causal routing (capacity is the target); 0 for dense.
	CausalRouted float64 `json:"causal_routed"`
	// CausalForwardFLOPs is ForwardFLOPs at the share each routed layer
	// routed under causal routing: the inference cost the model implies.
	CausalForwardFLOPs float64 `json:"causal_forward_flops"`
	// The causal decision against top-k membership, means over routed
	// layers (mod.DecisionCounts); 0 for dense. AccuracyFloor is 1 − k/T,
	// the accuracy of a decision that routes nothing.
	DecisionPrecision float64 `json:"decision_precision"`
	DecisionRecall    float64 `json:"decision_recall"`
	DecisionF1        float64 `json:"decision_f1"`
	DecisionAccuracy  float64 `json:"decision_accuracy"`
	AccuracyFloor     float64 `json:"accuracy_floor"`
	// Layers: per routed layer, in layer order (runs.json only).
	RoutedLayers   []int     `json:"routed_layers,omitempty"`
	LayerPrecision []float64 `json:"layer_precision,omitempty"`
	LayerRecall    []float64 `json:"layer_recall,omitempty"`
	LayerF1        []float64 `json:"layer_f1,omitempty"`
	LayerAccuracy  []float64 `json:"layer_accuracy,omitempty"`
	LayerRouted    []float64 `json:"layer_routed,omitempty"`
	ValWindows     int       `json:"val_windows"`
	WallS          float64   `json:"wall_s"`        // training loop only
	StepS          float64   `json:"step_s"`        // wall_s / steps
	MedianStepS    float64   `json:"median_step_s"` // robust to other load on the machine
	EvalS          float64   `json:"eval_s"`
}

// newResult fills the fields known before training.
func newResult(r RunSpec) Result {
	layout := mod.NewLayout(r.Model)
	embed := r.Model.Vocab * r.Model.DModel
	// Until evaluation measures the causal share, the causal forward pass
	// is the top-k one.
	forward := r.Model.TrainFLOPs(1).Forward
	return Result{
		Budget: r.Budget, Variant: r.Variant.Name, Capacity: r.Variant.Capacity,
		Shape: r.Shape.String(), Seed: r.Seed, DModel: r.Shape.DModel, Layers: r.Shape.Layers, Heads: r.Shape.Heads,
		SeqLen: r.Model.SeqLen, Batch: r.Batch,
		Params: layout.Total, NonEmbed: layout.Total - embed,
		Steps: r.Steps, StepFLOPs: r.FLOPsPerStep, FLOPs: float64(r.Steps) * r.FLOPsPerStep,
		ForwardFLOPs: forward, CausalForwardFLOPs: forward,
	}
}
