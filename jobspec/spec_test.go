package jobspec

import (
	"math"
	"os"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

func readValidSpec(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSpecValid(t *testing.T) {
	spec, err := Parse(readValidSpec(t), Limits{})
	if err != nil {
		t.Fatalf("ParseSpec: %v", err)
	}
	if spec.Name != "shakespeare-mod" || spec.Batch != 32 || spec.MaxWorkers != 4 {
		t.Errorf("decoded %+v", spec)
	}
	// Omitted optimizer fields take DefaultOptim's values; lr is the given one.
	want := mod.DefaultOptim()
	want.LR = 0.002
	if spec.Optim != want {
		t.Errorf("optim = %+v, want %+v", spec.Optim, want)
	}
	if spec.Model.Vocab != 256 || spec.Model.MLPHidden != 512 {
		t.Errorf("model defaults not applied: %+v", spec.Model)
	}
	plan, err := spec.Plan(Limits{})
	if err != nil {
		t.Fatal(err)
	}
	fps := spec.Model.TrainFLOPs(32).Total()
	if plan.FLOPsPerStep != fps || plan.Steps != int64(math.Floor(1e15/fps)) {
		t.Errorf("plan = %+v, want %g FLOPs/step and floor(1e15/%g) steps", plan, fps, fps)
	}
	if err := spec.CheckData("."); err != nil {
		t.Errorf("CheckData: %v", err)
	}
	spec.Data = "testdata/no-such-file.txt"
	if err := spec.CheckData("."); err == nil || !strings.HasPrefix(err.Error(), "data: ") {
		t.Errorf("CheckData of a missing file: %v", err)
	}
}

func TestParseSpecJSONAndExplicitZero(t *testing.T) {
	js := `{"name":"j","data":"x","model":{"d_model":64,"layers":2,"heads":2,"seq_len":32},
		"optim":{"clip_norm":0},"batch":4,"budget_flops":1e13}`
	spec, err := Parse([]byte(js), Limits{})
	if err != nil {
		t.Fatalf("ParseSpec: %v", err)
	}
	if spec.Optim.ClipNorm != 0 || spec.Optim.LR != mod.DefaultOptim().LR {
		t.Errorf("explicit clip_norm 0 must stay 0 and lr default: %+v", spec.Optim)
	}
	if spec.MinWorkers != 1 || spec.MaxWorkers != 1 || spec.KeepCheckpoints != DefaultKeepCheckpoints {
		t.Errorf("defaults: %+v", spec)
	}
}

func TestParseSpecErrors(t *testing.T) {
	valid := string(readValidSpec(t))
	// replace edits the valid spec: old1, new1, old2, new2, ...
	replace := func(pairs ...string) string {
		s := valid
		for i := 0; i < len(pairs); i += 2 {
			if !strings.Contains(s, pairs[i]) {
				t.Fatalf("test spec has no %q", pairs[i])
			}
			s = strings.Replace(s, pairs[i], pairs[i+1], 1)
		}
		return s
	}
	tests := []struct {
		name, spec string
		want       []string // substrings of the error, one per expected field error
	}{
		{"unknown top-level field", valid + "epochs: 3\n", []string{"epochs: unknown field; known fields are"}},
		{"unknown model field", replace("d_model: 128", "dmodel: 128, d_model: 128"), []string{"model.dmodel: unknown field"}},
		{"unknown optim field", replace("lr: 0.002", "learning_rate: 0.002"), []string{"optim.learning_rate: unknown field"}},
		{"capacity above 1", replace("capacity: 0.125", "capacity: 1.5"), []string{"model.capacity"}},
		{"capacity negative", replace("capacity: 0.125", "capacity: -0.5"), []string{"model.capacity"}},
		{"no layers", replace("layers: 4", "layers: -1"), []string{"model.layers"}},
		{"batch zero", replace("batch: 32", "batch: 0"), []string{"batch: 0 is out of range"}},
		{"batch not divisible by min_workers", replace("min_workers: 1", "min_workers: 3"), []string{"batch: 32 is not divisible by min_workers 3"}},
		{"max_workers above batch", replace("batch: 32", "batch: 2"), []string{"max_workers: 4 exceeds batch 2"}},
		{"min above max", replace("min_workers: 1", "min_workers: 8"), []string{"max_workers: 4 must be between min_workers (8)"}},
		{"budget below one step", replace("budget_flops: 1.0e15", "budget_flops: 1000"), []string{"budget_flops: 1000 is smaller than one step: one step of batch 32 costs"}},
		{"budget missing", replace("budget_flops: 1.0e15", ""), []string{"budget_flops: 0 must be a positive"}},
		{"name missing", replace("name: shakespeare-mod", ""), []string{"name: \"\" is not a job name"}},
		{"data missing", replace("data: testdata/job.yaml", ""), []string{"data: required"}},
		{"data absolute", replace("data: testdata/job.yaml", "data: /etc/passwd"), []string{`data: "/etc/passwd" is absolute`}},
		{"data dotdot", replace("data: testdata/job.yaml", "data: a/../../x"), []string{`data: "a/../../x" has a ".." component`}},
		{"eval_every negative", replace("eval_every: 100", "eval_every: -1"), []string{"eval_every: -1 is out of range"}},
		{"bad lr", replace("lr: 0.002", "lr: -1"), []string{"optim.lr"}},
		{"negative checkpoint_every", replace("checkpoint_every: 100", "checkpoint_every: -5"), []string{"checkpoint_every: -5"}},
		{"keep too many", replace("keep_checkpoints: 3", "keep_checkpoints: 5000"), []string{"keep_checkpoints: 5000 is out of range"}},
		{"wrong type", replace("batch: 32", "batch: lots"), []string{"spec: "}},
		{"duplicate key", valid + "batch: 8\n", []string{"not a YAML or JSON object"}},
		{"not an object", "- 1\n- 2\n", []string{"not a YAML or JSON object"}},
		{"empty", "", []string{"spec: empty"}},
		{"several at once", replace("batch: 32", "batch: 0\nfoo: 1"), []string{"foo: unknown field", "batch: 0 is out of range"}},
		{"flop counter work bound", replace("batch: 32", "batch: 1048576", "layers: 4", "layers: 64"), []string{"lower batch"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.spec), Limits{})
			if err == nil {
				t.Fatalf("ParseSpec accepted:\n%s", tc.spec)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if len(FieldErrors(err)) < len(tc.want) {
				t.Errorf("FieldErrors = %q, want at least %d", FieldErrors(err), len(tc.want))
			}
		})
	}
}
