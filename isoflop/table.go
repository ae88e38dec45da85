package isoflop

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
)

// csvHeader is the column order of runs.csv; the names are Result's JSON keys.
var csvHeader = []string{
	"budget", "variant", "capacity", "shape", "seed", "d_model", "layers", "heads", "seq_len", "batch",
	"params", "non_embed", "steps", "step_flops", "flops", "forward_flops",
	"train_loss", "val_loss", "val_loss_causal", "causal_routed", "causal_forward_flops",
	"decision_precision", "decision_recall", "decision_f1", "decision_accuracy", "accuracy_floor", "val_windows", "wall_s", "step_s", "median_step_s", "eval_s",
}

func (r Result) csvRow() []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	i := strconv.Itoa
	return []string{
		f(r.Budget), r.Variant, f(r.Capacity), r.Shape, i(r.Seed), i(r.DModel), i(r.Layers), i(r.Heads), i(r.SeqLen), i(r.Batch),
		i(r.Params), i(r.NonEmbed), i(r.Steps), f(r.StepFLOPs), f(r.FLOPs), f(r.ForwardFLOPs),
		f(r.TrainLoss), f(r.ValLoss), f(r.ValLossCausal), f(r.CausalRouted), f(r.CausalForwardFLOPs),
		f(r.DecisionPrecision), f(r.DecisionRecall), f(r.DecisionF1), f(r.DecisionAccuracy), f(r.AccuracyFloor), i(r.ValWindows), f(r.WallS), f(r.StepS), f(r.MedianStepS), f(r.EvalS),
	}
}

// WriteCSV writes results as runs.csv: a header, then one row per run.
func WriteCSV(w io.Writer, results []Result) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	for _, r := range results {
		if err := cw.Write(r.csvRow()); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteJSON writes results as runs.json: an array of run objects.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if results == nil {
		results = []Result{}
	}
	return enc.Encode(results)
}

// ReadJSON reads a runs.json file back.
func ReadJSON(path string) ([]Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	var rs []Result
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, fmt.Errorf("read results %s: %w", path, err)
	}
	return rs, nil
}
