package jobspec

import (
	"math"
	"strings"
	"testing"
)

const dilocoBase = `name: j
data: x.txt
model: {d_model: 64, layers: 2, heads: 2, seq_len: 32}
batch: 8
budget_flops: 1e13
checkpoint_every: 100
eval_every: 100
`

// TestDiLoCoSpecValidation: the sync option's forms, defaults and every
// refusal, each naming the field.
func TestDiLoCoSpecValidation(t *testing.T) {
	tests := []struct {
		name    string
		sync    string // appended to dilocoBase
		want    Sync   // when valid
		wantErr []string
	}{
		{"omitted: every step", "", Sync{}, nil},
		{"string every-step", "sync: every-step\n", Sync{Mode: SyncEveryStep}, nil},
		{"string diloco takes the defaults", "sync: diloco\n", DefaultDiLoCo(DefaultInnerSteps), nil},
		{"object with defaults", "sync: {mode: diloco, inner_steps: 20}\n", DefaultDiLoCo(20), nil},
		{"explicit zero momentum stays zero", "sync: {mode: diloco, inner_steps: 50, outer_lr: 1, outer_momentum: 0, nesterov: false, compress: int8}\n",
			Sync{Mode: SyncDiLoCo, InnerSteps: 50, OuterLR: 1, Nesterov: false, Compress: CompressInt8}, nil},
		{"unknown mode", "sync: sometimes\n", Sync{}, []string{"sync.mode", "sometimes", "every-step", "diloco"}},
		{"unknown field", "sync: {mode: diloco, inner_step: 5}\n", Sync{}, []string{"sync.inner_step", "unknown field"}},
		{"zero inner steps", "sync: {mode: diloco, inner_steps: 0}\n", Sync{}, []string{"sync.inner_steps", "0 is out of range"}},
		{"negative inner steps", "sync: {mode: diloco, inner_steps: -4}\n", Sync{}, []string{"sync.inner_steps"}},
		{"huge inner steps", "sync: {mode: diloco, inner_steps: 1e12}\n", Sync{}, []string{"sync.inner_steps"}},
		{"zero outer lr", "sync: {mode: diloco, inner_steps: 10, outer_lr: 0}\n", Sync{}, []string{"sync.outer_lr"}},
		{"outer lr too large", "sync: {mode: diloco, inner_steps: 10, outer_lr: 50}\n", Sync{}, []string{"sync.outer_lr", "(0, 10]"}},
		{"momentum 1", "sync: {mode: diloco, inner_steps: 10, outer_momentum: 1}\n", Sync{}, []string{"sync.outer_momentum", "[0, 1)"}},
		{"negative momentum", "sync: {mode: diloco, inner_steps: 10, outer_momentum: -0.5}\n", Sync{}, []string{"sync.outer_momentum"}},
		{"unknown compression", "sync: {mode: diloco, inner_steps: 10, compress: int4}\n", Sync{}, []string{"sync.compress", "int4", "int8"}},
		{"every-step with diloco fields", "sync: {mode: every-step, inner_steps: 10}\n", Sync{}, []string{"sync.mode", "takes no other sync fields"}},
		{"checkpoints mid-round", "sync: {mode: diloco, inner_steps: 30}\n", Sync{}, []string{"checkpoint_every", "multiple of sync.inner_steps 30", "use 120"}},
		{"not a string or object", "sync: [1, 2]\n", Sync{}, []string{"sync"}},
		{"warm-up of whole rounds", "sync: {mode: diloco, inner_steps: 20, warmup_steps: 100}\n",
			func() Sync { s := DefaultDiLoCo(20); s.WarmupSteps = 100; return s }(), nil},
		{"warm-up mid-round", "sync: {mode: diloco, inner_steps: 20, warmup_steps: 50}\n", Sync{}, []string{"sync.warmup_steps", "multiple of sync.inner_steps 20", "use 60"}},
		{"negative warm-up", "sync: {mode: diloco, inner_steps: 20, warmup_steps: -20}\n", Sync{}, []string{"sync.warmup_steps", "out of range"}},
		{"every-step with a warm-up", "sync: {mode: every-step, warmup_steps: 100}\n", Sync{}, []string{"sync.mode", "takes no other sync fields"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Parse([]byte(dilocoBase+tt.sync), Limits{})
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				got := Sync{}
				if spec.Sync != nil {
					got = *spec.Sync
				}
				if got != tt.want {
					t.Fatalf("sync = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted %q", tt.sync)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestDiLoCoBudgetExact: DiLoCo's steps are the most whose inner steps
// and outer steps the budget pays for; one more would overspend.
func TestDiLoCoBudgetExact(t *testing.T) {
	for _, tc := range []struct{ h, warmup int64 }{{1, 0}, {7, 0}, {20, 0}, {100, 0}, {5000, 0}, {7, 21}, {100, 300}, {100, 1_000_000}} {
		h := tc.h
		spec, err := Parse([]byte(dilocoBase), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		s := DefaultDiLoCo(h)
		s.WarmupSteps = tc.warmup
		spec.Sync = &s
		spec.CheckpointEvery, spec.EvalEvery = h, h
		plan, err := spec.Plan(Limits{})
		if err != nil {
			t.Fatal(err)
		}
		outer := 7 * float64(paramCount(spec.Model))
		if plan.OuterFLOPs != outer || plan.FLOPsPerStep != spec.Model.TrainFLOPs(spec.Batch).Total() {
			t.Fatalf("H %d: plan %+v, want outer %g", h, plan, outer)
		}
		cost := func(n int64) float64 { return float64(n)*plan.FLOPsPerStep + float64(s.OuterRounds(n))*outer }
		if plan.OuterSteps != s.OuterRounds(plan.Steps) || plan.TotalFLOPs() != cost(plan.Steps) {
			t.Fatalf("H %d: plan %+v spends %g, want %g", h, plan, plan.TotalFLOPs(), cost(plan.Steps))
		}
		if cost(plan.Steps) > spec.BudgetFLOPs || cost(plan.Steps+1) <= spec.BudgetFLOPs {
			t.Fatalf("H %d: %d steps cost %g, %d cost %g, budget %g", h, plan.Steps, cost(plan.Steps), plan.Steps+1, cost(plan.Steps+1), spec.BudgetFLOPs)
		}
		// Every-step buys floor(budget/per-step); DiLoCo at most that.
		if every := int64(math.Floor(spec.BudgetFLOPs / plan.FLOPsPerStep)); plan.Steps > every {
			t.Fatalf("H %d: DiLoCo buys %d steps, more than every-step's %d", h, plan.Steps, every)
		}
	}
}

// TestDiLoCoWarmupRounds: with sync.warmup_steps the first steps sync
// every step and take no outer step; the rounds start after them, and a
// short last round still ends with one.
func TestDiLoCoWarmupRounds(t *testing.T) {
	s := DefaultDiLoCo(10)
	s.WarmupSteps = 20
	for _, tt := range []struct {
		step          int64 // 1-based for IsOuterStep, 0-based for InWarmup
		warmup, outer bool
		rounds        int64 // outer steps in the first step steps
	}{
		{0, true, false, 0}, {10, true, false, 0}, {19, true, false, 0},
		{20, false, false, 0}, {21, false, false, 1}, {29, false, false, 1},
		{30, false, true, 1}, {31, false, false, 2}, {40, false, true, 2}, {45, false, true, 3},
	} {
		if got := s.InWarmup(tt.step); got != tt.warmup {
			t.Errorf("InWarmup(%d) = %v, want %v", tt.step, got, tt.warmup)
		}
		if got := s.IsOuterStep(tt.step, 45); got != tt.outer {
			t.Errorf("IsOuterStep(%d, 45) = %v, want %v", tt.step, got, tt.outer)
		}
		if got := s.OuterRounds(tt.step); got != tt.rounds {
			t.Errorf("OuterRounds(%d) = %d, want %d", tt.step, got, tt.rounds)
		}
	}
	var every Sync
	if every.InWarmup(0) || every.IsOuterStep(10, 10) || every.OuterRounds(10) != 0 {
		t.Error("every-step sync has a warm-up or outer steps")
	}
}

// TestDiLoCoMemoryCountsOuterState: DiLoCo's estimate has the full inner
// AdamW state and the outer state on top of every-step's.
func TestDiLoCoMemoryCountsOuterState(t *testing.T) {
	spec, err := Parse([]byte(dilocoBase), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	every := EstimateWorkerMemory(spec, 4, 2)
	s := DefaultDiLoCo(100)
	spec.Sync = &s
	dl := EstimateWorkerMemory(spec, 4, 2)
	P := paramCount(spec.Model)
	shard := math.Ceil(P / 4)
	if dl.Optimizer != 2*P*4 || dl.Outer != (2*P+shard)*4 || every.Outer != 0 {
		t.Fatalf("DiLoCo optimizer %g outer %g, want %g and %g", dl.Optimizer, dl.Outer, 2*P*4, (2*P+shard)*4)
	}
	if !strings.Contains(dl.String(), "DiLoCo outer state") {
		t.Errorf("breakdown %q does not name the outer state", dl)
	}
}
