package jobspec

import (
	"math"
	"os"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

// exampleSpecs are the job specs the repository shows users: they must
// stay accepted under the default limits.
var exampleSpecs = []struct{ name, yaml string }{
	{"README", `name: shakespeare-mod
data: data/tinyshakespeare.txt
model: {d_model: 128, layers: 4, heads: 4, seq_len: 128, capacity: 0.125, decision: aux-loss}
optim: {lr: 0.002}
batch: 32
budget_flops: 2.0e16
min_workers: 1
max_workers: 4
checkpoint_every: 250
keep_checkpoints: 3
`},
	{"chaos suite (data made relative)", `name: chaos
data: tinyshakespeare.txt
model: {d_model: 32, layers: 2, heads: 2, seq_len: 32, capacity: 0.25}
batch: 12
budget_flops: 1e15
min_workers: 3
max_workers: 3
checkpoint_every: 20
keep_checkpoints: 3
seed: 7
`},
}

func TestAdversarialMemoryEstimate(t *testing.T) {
	valid, err := os.ReadFile("testdata/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	huge := `name: huge
data: x.txt
model: {d_model: 65536, vocab: 1048576, layers: 2, heads: 2, seq_len: 128}
batch: 8
budget_flops: 1e30
`
	tests := []struct {
		name, spec string
		limits     Limits
		want       []string // substrings of the error; none: accepted
	}{
		{"testdata/job.yaml", string(valid), Limits{}, nil},
		{exampleSpecs[0].name, exampleSpecs[0].yaml, Limits{}, nil},
		{exampleSpecs[1].name, exampleSpecs[1].yaml, Limits{}, nil},
		{"d_model 65536 and vocab 1048576", huge, Limits{}, []string{"model: needs an estimated", "TiB per worker at min_workers 1", "more than the 8.0 GiB limit", "params ", "logits "}},
		{"a long sequence's attention", strings.Replace(huge, "d_model: 65536, vocab: 1048576, layers: 2, heads: 2, seq_len: 128", "d_model: 64, layers: 2, heads: 2, seq_len: 65536", 1), Limits{}, []string{"more than the 8.0 GiB limit"}},
		{"the example under a 16 MiB limit", string(valid), Limits{WorkerMemoryBytes: 16 << 20}, []string{"more than the 16.0 MiB limit"}},
		{"a larger limit admits more", strings.Replace(exampleSpecs[0].yaml, "batch: 32", "batch: 2048", 1), Limits{WorkerMemoryBytes: 1 << 40}, nil},
		{"the same under the default", strings.Replace(exampleSpecs[0].yaml, "batch: 32", "batch: 2048", 1), Limits{}, []string{"more than the 8.0 GiB limit", "(2048 sequences)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := Parse([]byte(tc.spec), tc.limits)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				est := EstimateWorkerMemory(spec, spec.MinWorkers, 0)
				t.Logf("estimate %s: %s", formatBytes(est.Total()), est)
				return
			}
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.spec)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			t.Logf("refused: %v", err)
		})
	}
}

// TestEstimateShrinksWithWorkers checks the terms that are split among
// workers: a rank's activations and optimizer shard.
func TestEstimateShrinksWithWorkers(t *testing.T) {
	spec := Spec{Model: mod.DefaultConfig(), Batch: 32}.WithDefaults()
	one, four := EstimateWorkerMemory(spec, 1, 8), EstimateWorkerMemory(spec, 4, 8)
	if !(four.Activations < one.Activations && four.Optimizer < one.Optimizer && four.Params == one.Params) {
		t.Fatalf("1 worker: %s\n4 workers: %s", one, four)
	}
	if four.LocalBatch != 8 || one.Replicas != 8 || four.Replicas != 8 {
		t.Fatalf("split: %+v %+v", one, four)
	}
}

func TestAdversarialHyperparameterRanges(t *testing.T) {
	valid, err := os.ReadFile("testdata/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	base, err := Parse(valid, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	nan, inf := math.NaN(), math.Inf(1)
	tests := []struct {
		name string
		edit func(*Spec)
		want string // substring of the error; "" means accepted
	}{
		{"defaults", func(*Spec) {}, ""},
		{"lr at the bound", func(s *Spec) { s.Optim.LR, s.Optim.WeightDecay = 10, 0 }, ""},
		{"lr 1e308", func(s *Spec) { s.Optim.LR = 1e308 }, "optim.lr: 1e+308 is outside (0, 10]"},
		{"lr NaN", func(s *Spec) { s.Optim.LR = nan }, "optim.lr: NaN is outside (0, 10]"},
		{"lr +Inf", func(s *Spec) { s.Optim.LR = inf }, "optim.lr: +Inf is outside"},
		{"lr negative", func(s *Spec) { s.Optim.LR = -1e-3 }, "optim.lr: -0.001 is outside"},
		{"lr zero", func(s *Spec) { s.Optim.LR = 0 }, "optim.lr: 0 is outside"},
		{"min_lr above lr", func(s *Spec) { s.Optim.MinLR = 1 }, "optim.min_lr: 1 is outside [0, lr = 0.002]"},
		{"min_lr NaN", func(s *Spec) { s.Optim.MinLR = nan }, "optim.min_lr: NaN"},
		{"beta1 one", func(s *Spec) { s.Optim.Beta1 = 1 }, "optim.beta1: 1 is outside [0, 1)"},
		{"beta2 NaN", func(s *Spec) { s.Optim.Beta2 = nan }, "optim.beta2: NaN is outside [0, 1)"},
		{"eps zero", func(s *Spec) { s.Optim.Eps = 0 }, "optim.eps: 0 is outside (0, 1]"},
		{"eps -Inf", func(s *Spec) { s.Optim.Eps = math.Inf(-1) }, "optim.eps: -Inf"},
		{"weight_decay 1e308", func(s *Spec) { s.Optim.WeightDecay = 1e308 }, "optim.weight_decay: 1e+308 is outside [0, 10]"},
		{"weight_decay times lr flips weights", func(s *Spec) { s.Optim.LR, s.Optim.WeightDecay = 1, 2 }, "must be below 1"},
		{"clip_norm Inf", func(s *Spec) { s.Optim.ClipNorm = inf }, "optim.clip_norm: +Inf is outside [0, 1e+06]"},
		{"clip_norm negative", func(s *Spec) { s.Optim.ClipNorm = -1 }, "optim.clip_norm: -1"},
		{"warmup negative", func(s *Spec) { s.Optim.WarmupSteps = -1 }, "optim.warmup_steps: -1 is outside [0, 1000000000]"},
		{"warmup huge", func(s *Spec) { s.Optim.WarmupSteps = math.MaxInt }, "optim.warmup_steps"},
		{"norm_eps 1e308", func(s *Spec) { s.Model.NormEps = 1e308 }, "model.norm_eps: 1e+308 is outside (0, 1]"},
		{"norm_eps NaN", func(s *Spec) { s.Model.NormEps = nan }, "model.norm_eps: NaN"},
		{"norm_eps negative", func(s *Spec) { s.Model.NormEps = -1e-5 }, "model.norm_eps"},
		{"aux_loss_weight 1e308", func(s *Spec) { s.Model.AuxLossWeight = 1e308 }, "model.aux_loss_weight: 1e+308 is outside [0, 100]"},
		{"aux_loss_weight NaN", func(s *Spec) { s.Model.AuxLossWeight = nan }, "model.aux_loss_weight: NaN"},
		{"aux_loss_weight negative", func(s *Spec) { s.Model.AuxLossWeight = -0.1 }, "model.aux_loss_weight"},
		{"rope_theta Inf", func(s *Spec) { s.Model.RoPETheta = inf }, "model.rope_theta: +Inf is outside (0, 1e+12]"},
		{"capacity NaN", func(s *Spec) { s.Model.Capacity = nan }, "model.capacity: NaN is outside (0, 1]"},
		{"budget NaN", func(s *Spec) { s.BudgetFLOPs = nan }, "budget_flops: NaN must be a positive, finite number"},
		{"budget Inf", func(s *Spec) { s.BudgetFLOPs = inf }, "budget_flops: +Inf"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			s.Model.RoutedLayers = append([]int(nil), base.Model.RoutedLayers...)
			tc.edit(&s)
			err := s.Validate(Limits{})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestAdversarialHyperparameterRangesYAML checks the YAML spellings: .nan
// and .inf never reach validation (the YAML-to-JSON step refuses them),
// and huge finite values are refused by validation, naming the field.
func TestAdversarialHyperparameterRangesYAML(t *testing.T) {
	valid, err := os.ReadFile("testdata/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{"lr: 0.002", "lr: .nan", "unsupported value: NaN"},
		{"lr: 0.002", "lr: .inf", "unsupported value: +Inf"},
		{"lr: 0.002", "lr: 1e308", "optim.lr"},
		{"capacity: 0.125", "capacity: 0.125, norm_eps: 1e308", "model.norm_eps"},
		{"capacity: 0.125", "capacity: 0.125, aux_loss_weight: 1e308", "model.aux_loss_weight"},
	} {
		t.Run(tc.new, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(string(valid), tc.old, tc.new, 1)), Limits{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
