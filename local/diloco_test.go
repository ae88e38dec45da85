package local

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// TestDiLoCoClusterWorkerLossRedoesRound runs a DiLoCo job (rounds of 5
// steps, checkpoints every 10) on two workers of a whole cluster, kills
// one mid-job, and checks that the job resumes from the last outer
// boundary on the survivor and completes exactly its steps, that each
// committed checkpoint holds every rank's inner state, and that outer
// steps happened where the rounds end.
func TestDiLoCoClusterWorkerLossRedoesRound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const steps, every, inner = 40, 10, 5
	spec, _ := testSpec(t, steps, 2, every)
	dl := jobspec.DefaultDiLoCo(inner)
	spec.Sync = &dl
	spec.EvalEvery = every
	// The budget pays for the inner steps and the outer steps' FLOPs.
	P := float64(mod.NewLayout(spec.Model).Total)
	spec.BudgetFLOPs = steps*spec.Model.TrainFLOPs(spec.Batch).Total() + steps/inner*dl.OuterFLOPsPerParam()*P
	raw, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	outerAt := map[int64]bool{}
	record := func(_, _ string, _ uint64, rank int, res train.StepResult) {
		if rank == 0 && res.Outer {
			mu.Lock()
			outerAt[res.Step] = true
			mu.Unlock()
		}
	}
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 2, OnStep: record, RingDeadline: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Client.Submit(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Steps != steps {
		t.Fatalf("budget bought %d steps, want %d", sub.Steps, steps)
	}
	j := waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool {
		return j.Checkpoint != nil && j.Checkpoint.Step >= every || ended(j)
	})
	if ended(j) {
		t.Fatalf("job ended before the fault: %s", j.Status)
	}
	store, err := checkpoint.NewDirStore(c.CheckpointDir())
	if err != nil {
		t.Fatal(err)
	}
	ck := j.Checkpoint
	for r := range ck.World {
		p := filepath.Join(store.StepDir(ck.Job, ck.Step, ck.Generation), train.InnerStateFile(r, ck.World))
		if _, err := os.Stat(p); err != nil {
			t.Errorf("committed checkpoint of step %d lacks rank %d's inner state: %v", ck.Step, r, err)
		}
	}
	gen := j.Generation
	c.KillWorker(j.Members[len(j.Members)-1])
	j = waitJob(t, ctx, c, sub.ID, ended)
	if j.Status != coordinator.StatusCompleted {
		t.Fatalf("job ended %s: %s", j.Status, j.Reason)
	}
	if j.Generation <= gen || j.ResumeFrom == nil || j.StartStep%inner != 0 || j.StartStep < every {
		t.Fatalf("generation %d (was %d) started at step %d from %+v; want an outer boundary's checkpoint", j.Generation, gen, j.StartStep, j.ResumeFrom)
	}
	if j.Ledger.StepsDone != steps || j.Checkpoint == nil || j.Checkpoint.Step != steps {
		t.Fatalf("steps done %d, final checkpoint %+v; want %d", j.Ledger.StepsDone, j.Checkpoint, steps)
	}
	if j.Ledger.FLOPsUsed != spec.BudgetFLOPs || j.Ledger.FLOPsSpent < j.Ledger.FLOPsUsed {
		t.Errorf("ledger %+v: want the whole budget %g used (inner and outer steps), and at least that spent", j.Ledger, spec.BudgetFLOPs)
	}
	mu.Lock()
	defer mu.Unlock()
	for s := int64(inner); s <= steps; s += inner {
		if !outerAt[s] {
			t.Errorf("no outer step reported at step %d", s)
		}
	}
	t.Logf("generation %d resumed from step %d; outer steps at %d steps", j.Generation, j.StartStep, len(outerAt))
}
