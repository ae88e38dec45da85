package coordinator

import (
	"os"
	"testing"
)

// FuzzParseSpec checks that no input makes ParseSpec panic, and that
// whatever it accepts has a plan of at least one step.
func FuzzParseSpec(f *testing.F) {
	valid, err := os.ReadFile("testdata/job.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(valid),
		`{"name":"j","data":"x","model":{"d_model":64,"layers":2,"heads":2,"seq_len":32},"batch":4,"budget_flops":1e13}`,
		`{"name":"j","data":"x","model":{"d_model":64,"layers":2,"heads":2,"seq_len":32,"capacity":2},"batch":4,"budget_flops":1}`,
		"name: x\nmodel: [1, 2]\n",
		"a: &a [*a, *a]\n",
		"budget_flops: .inf\nbatch: -1\n",
		"{",
		"",
		"null",
		"model: {routed_layers: [0, 0, 99]}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		spec, err := ParseSpec(data)
		if err != nil {
			return
		}
		plan, err := spec.Plan()
		if err != nil {
			t.Fatalf("ParseSpec accepted a spec that Plan rejects: %v", err)
		}
		if plan.Steps < 1 || plan.FLOPsPerStep <= 0 {
			t.Fatalf("accepted plan %+v", plan)
		}
	})
}
