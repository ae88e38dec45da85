package jobspec

import (
	"os"
	"runtime"
	"strings"
	"testing"
)

// maxParseAlloc bounds what one Parse may allocate, whatever the input: a
// spec is at most MaxSpecBytes, so anything near this is an amplification
// (an alias bomb, a size taken from the input and allocated).
const maxParseAlloc = 64 << 20

// FuzzParseSpec checks that no input makes Parse panic or allocate more
// than maxParseAlloc, that whatever it accepts has a plan of at least one
// step under the same limits, a data path that stays relative, and a
// memory estimate within the limit, and that errors stay short.
func FuzzParseSpec(f *testing.F) {
	valid, err := os.ReadFile("testdata/job.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(valid),
		`{"name":"j","data":"x","model":{"d_model":64,"layers":2,"heads":2,"seq_len":32},"batch":4,"budget_flops":1e13}`,
		`{"name":"j","data":"x","model":{"d_model":64,"layers":2,"heads":2,"seq_len":32,"capacity":2},"batch":4,"budget_flops":1}`,
		`{"name":"j","data":"x","model":{"d_model":65536,"layers":2,"heads":2,"seq_len":32,"vocab":1048576},"batch":4,"budget_flops":1e30}`,
		"name: j\ndata: x\nmodel: {d_model: 64, layers: 2, heads: 2, seq_len: 32, norm_eps: .nan}\noptim: {lr: .inf}\nbatch: 4\nbudget_flops: 1e13\n",
		"name: j\ndata: ../../etc/passwd\nbatch: 4\n",
		"name: j\ndata: /dev/zero\nbatch: 4\n",
		"name: x\nmodel: [1, 2]\n",
		"a: &a [*a, *a]\n",
		"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
		"budget_flops: .inf\nbatch: -1\n",
		"{",
		"",
		"null",
		"model: {routed_layers: [0, 0, 99]}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		spec, err := Parse(data, Limits{})
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > maxParseAlloc {
			t.Fatalf("Parse of %d bytes allocated %d bytes", len(data), got)
		}
		if err != nil {
			// Every message quotes user text truncated: an error is never
			// much larger than the fields it names.
			for _, msg := range FieldErrors(err) {
				if len(msg) > 4096 {
					t.Fatalf("an error message of %d bytes: %.200s…", len(msg), msg)
				}
			}
			return
		}
		plan, err := spec.Plan(Limits{})
		if err != nil {
			t.Fatalf("Parse accepted a spec that Plan rejects: %v", err)
		}
		if plan.Steps < 1 || plan.FLOPsPerStep <= 0 {
			t.Fatalf("accepted plan %+v", plan)
		}
		if err := CheckDataPath(spec.Data); err != nil || strings.HasPrefix(spec.Data, "/") {
			t.Fatalf("accepted data path %q: %v", spec.Data, err)
		}
		if est := EstimateWorkerMemory(spec, spec.MinWorkers, 0); !(est.Total() <= DefaultWorkerMemoryBytes) {
			t.Fatalf("accepted a spec whose estimate %s is over the limit: %s", formatBytes(est.Total()), est)
		}
	})
}
