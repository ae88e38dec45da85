package local

import (
	"context"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/train"
)

// TestAdversarialDivergedJobFails: a worker's weights turn NaN just before
// the checkpoint of step 20 (as a diverged update or a flipped bit would
// leave them; no spec within jobspec's bounds diverges to NaN quickly on
// this model, its norms keep a loss of thousands finite). The worker
// refuses to checkpoint that state, or to take the NaN step after it, and
// fails the job, non-retryably, with a reason that names the step and the fix; the
// last committed checkpoint stays the finite one of step 10, and nothing
// after it is committed or left on disk as committed.
func TestAdversarialDivergedJobFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const steps, every, poisonAt = 40, 10, 20
	_, raw := testSpec(t, steps, 1, every)
	var mu sync.Mutex
	trainers := map[string]*train.Trainer{}
	poisoned := false
	var cl *Cluster // set once Start returns, before the job is submitted
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Coordinators: 1, Workers: 1,
		OnTrainer: func(w, _ string, _ uint64, _ int, tr *train.Trainer) {
			mu.Lock()
			defer mu.Unlock()
			trainers[w] = tr
		},
		OnStep: func(w, _ string, _ uint64, _ int, res train.StepResult) {
			if res.Step != poisonAt {
				return
			}
			// Let step 10's checkpoint commit first, so that the one of
			// step 20 is attempted (a round is skipped while the previous
			// one is still being reported) and meets the NaN state.
			mu.Lock()
			c := cl
			mu.Unlock()
			waitCommitted(ctx, c, every)
			mu.Lock()
			defer mu.Unlock()
			params := trainers[w].Model().Params()
			for i := range params {
				params[i] = float32(math.NaN())
			}
			poisoned = true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mu.Lock()
	cl = c
	mu.Unlock()
	sub, err := c.Client.Submit(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, ctx, c, sub.ID, ended)
	mu.Lock()
	if !poisoned {
		t.Fatal("the test never poisoned the weights")
	}
	mu.Unlock()
	if j.Status != coordinator.StatusFailed {
		t.Fatalf("diverged job ended %s (%s), want failed", j.Status, j.Reason)
	}
	// Step 20's checkpoint refuses the NaN state.
	if !regexp.MustCompile(`step 20: a parameter is NaN.*lower optim\.lr or set optim\.clip_norm`).MatchString(j.Reason) {
		t.Errorf("reason %q does not name step 20, the NaN and the fix", j.Reason)
	}
	if j.Checkpoint == nil || j.Checkpoint.Step != every {
		t.Fatalf("committed checkpoint %+v, want the one of step %d", j.Checkpoint, every)
	}
	// The failure is final: no other generation is formed, nothing later
	// is committed.
	time.Sleep(3 * time.Second)
	after, err := c.Client.Job(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != coordinator.StatusFailed || after.Generation != j.Generation || after.Checkpoint.Step != every || after.Pending != nil {
		t.Fatalf("after the failure: %s generation %d (was %d), checkpoint %d, pending %+v", after.Status, after.Generation, j.Generation, after.Checkpoint.Step, after.Pending)
	}
	if !strings.Contains(j.Reason, "lower optim.lr") {
		t.Errorf("reason %q does not give the fix", j.Reason)
	}
	store, err := checkpoint.NewDirStore(c.CheckpointDir())
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := store.Steps(sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range onDisk {
		if d.Step >= poisonAt {
			t.Errorf("a checkpoint directory of step %d exists after the divergence", d.Step)
		}
	}
}

// waitCommitted polls until some job of the cluster has a committed
// checkpoint at step or later, or ctx ends.
func waitCommitted(ctx context.Context, c *Cluster, step int64) {
	for ctx.Err() == nil {
		jobs, err := c.Client.Jobs(ctx)
		for _, j := range jobs {
			if err == nil && j.Checkpoint != nil && j.Checkpoint.Step >= step {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}
