package local

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// testSpec is a small job: a tiny MoD model, steps steps exactly.
func testSpec(t *testing.T, steps int64, maxWorkers int, every int64) (coordinator.JobSpec, []byte) {
	t.Helper()
	model := mod.Config{DModel: 32, Layers: 2, Heads: 2, SeqLen: 32, Capacity: 0.25, Seed: 5}.WithDefaults()
	spec := coordinator.JobSpec{
		Name: "test", Data: "tinyshakespeare.txt", Model: model, Optim: mod.DefaultOptim(), Batch: 8,
		BudgetFLOPs: float64(steps) * model.TrainFLOPs(8).Total(),
		MinWorkers:  1, MaxWorkers: maxWorkers, CheckpointEvery: every, KeepCheckpoints: 2, Seed: 7,
	}
	raw, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return spec, raw
}

// dataRoot is the repository's data directory, the workers' data root.
func dataRoot(t *testing.T) string {
	p, err := filepath.Abs("../data")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// stepLog records rank 0's loss at every step, by generation.
type stepLog struct {
	mu     sync.Mutex
	losses map[int64]float64
	gens   map[uint64]bool
}

func (s *stepLog) record(_, _ string, gen uint64, rank int, res train.StepResult) {
	if rank != 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.losses[res.Step] = res.Loss
	s.gens[gen] = true
}

func newStepLog() *stepLog { return &stepLog{losses: map[int64]float64{}, gens: map[uint64]bool{}} }

func waitJob(t *testing.T, ctx context.Context, c *Cluster, id string, until func(coordinator.Job) bool) coordinator.Job {
	t.Helper()
	for {
		j, err := c.Client.Job(ctx, id)
		if err == nil && until(j) {
			return j
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s: %v (last: %+v, err %v)", id, ctx.Err(), j.Ledger, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func ended(j coordinator.Job) bool {
	return j.Status == coordinator.StatusCompleted || j.Status == coordinator.StatusFailed || j.Status == coordinator.StatusCanceled
}

// TestClusterMatchesSingleProcess: two workers with global batch B give the
// per-step losses of a single process with batch B, to 1e-5 relative, for
// 50 steps; only the summation order differs.
func TestClusterMatchesSingleProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const steps = 50
	spec, raw := testSpec(t, steps, 2, 25)
	log := newStepLog()
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 2, OnStep: log.record})
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
	// An abandoned attempt, as a skipped round or a failover leaves: shards
	// of a step that was never committed. Pruning after a commit removes it.
	store, err := checkpoint.NewDirStore(c.CheckpointDir())
	if err != nil {
		t.Fatal(err)
	}
	abandoned := store.StepDir(sub.ID, 3, 0)
	if err := os.MkdirAll(abandoned, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(abandoned, "rank-00000.safetensors"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, ctx, c, sub.ID, ended)
	if j.Status != coordinator.StatusCompleted || len(j.Members) != 2 && j.Generation != 1 {
		t.Fatalf("job ended %s (%s), generation %d, members %v", j.Status, j.Reason, j.Generation, j.Members)
	}
	onDisk, err := store.Steps(sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	var gotSteps, wantSteps []int64
	for _, d := range onDisk {
		gotSteps = append(gotSteps, d.Step)
	}
	for _, m := range j.Retained {
		wantSteps = append(wantSteps, m.Step)
	}
	if !slices.Equal(gotSteps, wantSteps) {
		t.Errorf("checkpoint steps on disk %v, want exactly the retained %v (the abandoned step 3 pruned)", gotSteps, wantSteps)
	}
	if j.Ledger.StepsDone != steps || j.Ledger.FLOPsUsed != float64(steps)*j.Ledger.FLOPsPerStep {
		t.Fatalf("ledger %+v, want %d steps", j.Ledger, steps)
	}

	worst := compareWithSingleProcess(t, spec, steps, log)
	t.Logf("50 steps, 2 workers vs 1 process: worst relative loss difference %.2g", worst)
}

// TestWorkerLossResumesFromCheckpoint kills both members of a two-worker
// generation at once (batch 8 does not split over three, so the third
// worker is a spare). They were each other's ring neighbours, holding each
// other's replica, so the state is gone from memory: the spare forms a
// new generation from the last committed checkpoint and finishes exactly
// the job's steps.
func TestWorkerLossResumesFromCheckpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const steps, every = 60, 10
	spec, raw := testSpec(t, steps, 3, every)
	log := newStepLog()
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 3, OnStep: log.record, RingDeadline: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Client.Submit(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool {
		return j.Checkpoint != nil && j.Checkpoint.Step >= 2*every || ended(j)
	})
	if ended(j) || len(j.Members) != 2 {
		t.Fatalf("before the fault: job %s with members %v", j.Status, j.Members)
	}
	gen, victims := j.Generation, j.Members
	var wg sync.WaitGroup
	for _, v := range victims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.KillWorker(v)
		}()
	}
	wg.Wait()
	j = waitJob(t, ctx, c, sub.ID, ended)
	if j.Status != coordinator.StatusCompleted {
		t.Fatalf("job ended %s: %s", j.Status, j.Reason)
	}
	if j.Generation <= gen || len(j.Members) != 1 {
		t.Fatalf("after losing %v: generation %d (was %d), members %v", victims, j.Generation, gen, j.Members)
	}
	if j.ResumeMemory != nil || j.ResumeFrom == nil || j.StartStep != j.ResumeFrom.Step || j.StartStep < 2*every {
		t.Fatalf("the new generation started at step %d from checkpoint %+v, memory %+v; want the last committed checkpoint", j.StartStep, j.ResumeFrom, j.ResumeMemory)
	}
	// The counters the in-memory tests rely on see this disk read.
	regs := []prometheus.Gatherer{c.WorkerMetrics(j.Members[0])}
	if reads := counter(t, regs, "modcoord_checkpoint_shard_reads_total", ""); reads < 1 {
		t.Fatalf("the spare read %v checkpoint shards to resume from one", reads)
	}
	if n := counter(t, regs, "modcoord_resumes_total", "checkpoint"); n != 1 {
		t.Fatalf("%v resumes from a checkpoint, want 1", n)
	}
	if j.Ledger.StepsDone != steps {
		t.Fatalf("steps done %d, want exactly %d", j.Ledger.StepsDone, steps)
	}
	if j.Checkpoint == nil || j.Checkpoint.Step != steps {
		t.Fatalf("final checkpoint %+v, want step %d", j.Checkpoint, steps)
	}
	t.Logf("killed %v after generation %d; generation %d resumed from step %d with %v", victims, gen, j.Generation, j.StartStep, j.Members)

	// The global batch does not depend on the number of workers, so the
	// resumed 1-worker run continues the 2-worker curve exactly, up to
	// summation order: every step's loss matches one process to 1e-5.
	worst := compareWithSingleProcess(t, spec, steps, log)
	t.Logf("2 → 1 workers: worst relative loss difference to one process over %d steps: %.2g", steps, worst)
}

func compareWithSingleProcess(t *testing.T, spec coordinator.JobSpec, steps int64, log *stepLog) float64 {
	t.Helper()
	ds, err := mod.LoadDataset(filepath.Join(dataRoot(t), spec.Data))
	if err != nil {
		t.Fatal(err)
	}
	single, err := train.NewTrainer(train.TrainerConfig{Model: spec.Model, Optim: spec.Optim, GlobalBatch: spec.Batch,
		TotalSteps: steps, Seed: spec.Seed, Rank: 0, World: 1}, ds, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	log.mu.Lock()
	defer log.mu.Unlock()
	var worst float64
	for s := int64(1); s <= steps; s++ {
		r, err := single.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got, ok := log.losses[s]
		if !ok {
			t.Fatalf("the cluster reported no loss for step %d", s)
		}
		rel := math.Abs(got-r.Loss) / r.Loss
		worst = math.Max(worst, rel)
		if rel > 1e-5 {
			t.Fatalf("step %d: cluster loss %.8f, single process %.8f (rel %.2g)", s, got, r.Loss, rel)
		}
	}
	return worst
}

// TestLeaderLossJobContinues kills the raft leader mid-job; a new leader
// is elected and the job completes.
func TestLeaderLossJobContinues(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const steps = 60
	_, raw := testSpec(t, steps, 2, 20)
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 2, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Client.Submit(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool { return j.Ledger.StepsDone >= 10 || ended(j) })
	old := c.Leader()
	if err := c.StopCoordinator(old); err != nil {
		t.Fatal(err)
	}
	if err := c.waitLeader(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, ctx, c, sub.ID, ended)
	if j.Status != coordinator.StatusCompleted || j.Ledger.StepsDone != steps {
		t.Fatalf("after killing leader %d: job %s at %d/%d steps (%s)", old, j.Status, j.Ledger.StepsDone, steps, j.Reason)
	}
	t.Logf("leader %d killed; coordinator %d took over; job completed %d steps", old, c.Leader(), steps)
}

// testLogger sends the cluster's warnings and errors to the test log.
func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("MODCOORD_TEST_INFO") != "" {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestClusterValLossMatchesTrain: the validation loss a cluster reports at
// its last step equals what a single-process trainer computes at the same
// step with the same spec and seed. With one worker the arithmetic is the
// same, so the loss is bit-identical; with two, the gradients are summed
// in another order (and the ranks' shares of the windows are added), so
// it agrees to 1e-5 relative, the tolerance of the per-step losses above.
// The one-worker cluster then runs a second job from the first one's
// checkpoint (init_from): it starts from the trained weights, counts only
// its own steps, and a spec whose model differs is refused.
func TestClusterValLossMatchesTrain(t *testing.T) {
	for _, tc := range []struct {
		workers int
		tol     float64
	}{{1, 0}, {2, 1e-5}} {
		t.Run(fmt.Sprintf("%d workers", tc.workers), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			const steps = 20
			spec, _ := testSpec(t, steps, tc.workers, 10)
			spec.EvalEvery, spec.EvalWindows = 10, 6
			raw, err := yaml.Marshal(spec)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: tc.workers})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sub, err := c.Client.Submit(ctx, raw)
			if err != nil {
				t.Fatal(err)
			}
			j := waitJob(t, ctx, c, sub.ID, ended)
			if j.Status != coordinator.StatusCompleted || j.Val == nil {
				t.Fatalf("job ended %s (%s) with validation %+v", j.Status, j.Reason, j.Val)
			}
			if j.Val.Step != steps {
				t.Fatalf("last validation at step %d, want the last step %d", j.Val.Step, steps)
			}

			ds, err := spec.OpenCorpus(dataRoot(t))
			if err != nil {
				t.Fatal(err)
			}
			defer ds.Close()
			single, err := train.NewTrainer(train.TrainerConfig{Model: spec.Model, Optim: spec.Optim, GlobalBatch: spec.Batch,
				TotalSteps: steps, Seed: spec.Seed, Rank: 0, World: 1}, ds, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer single.Close()
			for range steps {
				if _, err := single.Step(ctx); err != nil {
					t.Fatal(err)
				}
			}
			want, err := single.EvalLoss(ctx, spec.EvalWindows)
			if err != nil {
				t.Fatal(err)
			}
			rel := math.Abs(j.Val.Loss-want) / want
			if rel > tc.tol {
				t.Fatalf("cluster of %d reported val %.10f at step %d; train computes %.10f (rel %.2g, tolerance %g)", tc.workers, j.Val.Loss, j.Val.Step, want, rel, tc.tol)
			}
			t.Logf("%d workers: val %.10f at step %d, train %.10f (rel %.2g)", tc.workers, j.Val.Loss, j.Val.Step, want, rel)
			if tc.workers != 1 {
				return
			}

			// A job continuing from this one's final checkpoint.
			spec2, _ := testSpec(t, 5, 1, 5)
			spec2.Name, spec2.InitFrom = "continued", &jobspec.InitFrom{Checkpoint: sub.ID, Optimizer: true}
			spec2.EvalEvery, spec2.EvalWindows = 5, 6
			raw2, _ := yaml.Marshal(spec2)
			sub2, err := c.Client.Submit(ctx, raw2)
			if err != nil {
				t.Fatal(err)
			}
			j2 := waitJob(t, ctx, c, sub2.ID, ended)
			if j2.Status != coordinator.StatusCompleted || j2.Ledger.StepsDone != 5 || j2.Ledger.TotalSteps != 5 {
				t.Fatalf("continued job ended %s (%s), ledger %+v; want its own 5 steps", j2.Status, j2.Reason, j2.Ledger)
			}
			if first := j2.Recent[0]; first.Loss > want+0.1 {
				t.Fatalf("continued job's first loss %.4f is not near the first job's val %.4f: it did not start from its weights", first.Loss, want)
			}

			bad := spec2
			bad.Name, bad.Model.DModel = "mismatch", 48
			raw3, _ := yaml.Marshal(bad)
			sub3, err := c.Client.Submit(ctx, raw3)
			if err != nil {
				t.Fatal(err)
			}
			j3 := waitJob(t, ctx, c, sub3.ID, ended)
			if j3.Status != coordinator.StatusFailed || !strings.Contains(j3.Reason, "init_from") {
				t.Fatalf("a job whose model differs from init_from's checkpoint ended %s: %s", j3.Status, j3.Reason)
			}
		})
	}
}
