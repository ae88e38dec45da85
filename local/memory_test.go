package local

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/train"
)

// recovery watches a cluster's steps: the newest step each generation
// reached, when each generation took its first step, and the final
// parameters of the job's last step.
type recovery struct {
	mu       sync.Mutex
	trainers map[string]*train.Trainer // by worker and generation
	last     map[uint64]int64          // newest step any rank of a generation completed
	first    map[uint64]time.Time      // when a generation completed its first step
	final    []float32
	losses   map[int64]float64
	steps    int64
}

func newRecovery(steps int64) *recovery {
	return &recovery{trainers: map[string]*train.Trainer{}, last: map[uint64]int64{}, first: map[uint64]time.Time{}, losses: map[int64]float64{}, steps: steps}
}

func (r *recovery) onTrainer(w, _ string, gen uint64, _ int, tr *train.Trainer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trainers[fmt.Sprint(w, "/", gen)] = tr
}

func (r *recovery) onStep(w, _ string, gen uint64, rank int, res train.StepResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last[gen] = max(r.last[gen], res.Step)
	if _, ok := r.first[gen]; !ok {
		r.first[gen] = time.Now()
	}
	if rank == 0 {
		r.losses[res.Step] = res.Loss
	}
	if rank == 0 && res.Step == r.steps {
		r.final = append([]float32(nil), r.trainers[fmt.Sprint(w, "/", gen)].Model().Params()...)
	}
}

// counter sums a counter (all label values) over the given registries.
func counter(t *testing.T, regs []prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	var sum float64
	for _, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				ok := label == ""
				for _, l := range m.GetLabel() {
					ok = ok || l.GetValue() == label
				}
				if ok {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func paramsSHA(p []float32) string {
	h := sha256.New()
	b := make([]byte, 4)
	for _, v := range p {
		binary.LittleEndian.PutUint32(b, math.Float32bits(v))
		h.Write(b)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// checkResumedFromMemory fails the test unless the workers ids read no
// checkpoint shard (the store's counter) and, when memoryResumes > 0,
// exactly that many of their runs resumed from memory and none from a
// checkpoint.
func checkResumedFromMemory(t *testing.T, c *Cluster, ids []string, memoryResumes int) {
	t.Helper()
	var regs []prometheus.Gatherer
	for _, id := range ids {
		regs = append(regs, c.WorkerMetrics(id))
	}
	if reads := counter(t, regs, "modcoord_checkpoint_shard_reads_total", ""); reads != 0 {
		t.Fatalf("the workers read %v checkpoint shards; resuming from memory reads none", reads)
	}
	if memoryResumes == 0 {
		return
	}
	if n := counter(t, regs, "modcoord_resumes_total", "memory"); n != float64(memoryResumes) {
		t.Fatalf("%v resumes from memory, want %d", n, memoryResumes)
	}
	if n := counter(t, regs, "modcoord_resumes_total", "checkpoint"); n != 0 {
		t.Fatalf("%v resumes from a checkpoint, want none", n)
	}
}

// undisturbed trains the spec on world in-process ranks over an
// in-memory ring and returns the final parameters.
func undisturbed(t *testing.T, spec coordinator.JobSpec, world int, steps int64) []float32 {
	t.Helper()
	tr := allreduce.NewMemTransport(1 << 20)
	out := make([][]float32, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for rank := range world {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[rank] = func() error {
				ds, err := spec.OpenCorpus(dataRoot(t))
				if err != nil {
					return err
				}
				defer ds.Close()
				ring, err := allreduce.NewRing(tr, allreduce.Config{Job: "ref", Generation: 1, Rank: rank, World: world, Deadline: 20 * time.Second})
				if err != nil {
					return err
				}
				defer ring.Close()
				trn, err := train.NewTrainer(train.TrainerConfig{Model: spec.Model, Optim: spec.Optim, GlobalBatch: spec.Batch,
					TotalSteps: steps, Seed: spec.Seed, Rank: rank, World: world, Tokenizer: spec.Tokenizer}, ds, ring)
				if err != nil {
					return err
				}
				defer trn.Close()
				for range steps {
					if _, err := trn.Step(context.Background()); err != nil {
						return err
					}
				}
				out[rank] = append([]float32(nil), trn.Model().Params()...)
				return nil
			}()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out[0]
}

// TestInMemoryWorkerLossLosesAtMostOneStep kills a member of a
// two-worker generation mid-job (a third, spare worker is alive: batch 8
// does not split over three). The survivor holds its own range and the
// lost one's replica; the next generation (the survivor and the spare, the
// same N) resumes from memory at most one step before the newest step any
// rank completed, no worker reads a checkpoint (the only one is the final
// step's), and the final parameters are bit for bit those of an
// undisturbed two-rank run.
func TestInMemoryWorkerLossLosesAtMostOneStep(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const steps = 24
	spec, raw := testSpec(t, steps, 3, steps) // checkpoint only at the end
	rec := newRecovery(steps)
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 3, OnStep: rec.onStep, OnTrainer: rec.onTrainer,
		RingDeadline: 5 * time.Second, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Client.Submit(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool { return j.Ledger.StepsDone >= 8 || ended(j) })
	if ended(j) || len(j.Members) != 2 {
		t.Fatalf("before the fault: job %s with members %v", j.Status, j.Members)
	}
	gen, victim := j.Generation, j.Members[1]
	killed := time.Now()
	c.KillWorker(victim)
	j = waitJob(t, ctx, c, sub.ID, ended)
	if j.Status != coordinator.StatusCompleted || j.Ledger.StepsDone != steps {
		t.Fatalf("job ended %s at %d/%d steps: %s", j.Status, j.Ledger.StepsDone, steps, j.Reason)
	}

	rec.mu.Lock()
	reached := rec.last[gen]
	var resumed uint64
	for g := range rec.first {
		if g > gen && (resumed == 0 || g < resumed) {
			resumed = g
		}
	}
	took := rec.first[resumed].Sub(killed)
	final := rec.final
	rec.mu.Unlock()
	if resumed == 0 {
		t.Fatal("no generation trained after the fault")
	}
	// The generation that finished must be the one that resumed from
	// memory (a second change would have been another resume).
	if j.ResumeMemory == nil || j.ResumeMemory.From != gen {
		t.Fatalf("the last generation %d resumed from memory %+v, checkpoint %+v; want the memory of generation %d", j.Generation, j.ResumeMemory, j.ResumeFrom, gen)
	}
	lost := reached - j.StartStep
	if lost < 0 || lost > 1 {
		t.Fatalf("generation %d reached step %d; the next resumed at %d: %d steps lost, want at most 1", gen, reached, j.StartStep, lost)
	}
	checkResumedFromMemory(t, c, j.Members, 2)
	want := undisturbed(t, spec, 2, steps)
	if got, w := paramsSHA(final), paramsSHA(want); got != w {
		t.Fatalf("final parameters sha256 %s, an undisturbed two-rank run gives %s", got, w)
	}
	t.Logf("killed %s at step ≥8 of generation %d (newest step reached %d); generation %d resumed from memory at step %d: %d step(s) lost, first step %.2fs after the kill; final sha256 equals the undisturbed run's",
		victim, gen, reached, j.Generation, j.StartStep, lost, took.Seconds())
}

// TestInMemoryWorkerRestartEndsTheWait is the chaos soak's worker kill:
// min_workers equals the world (3), so the kill leaves too few workers and
// the job waits with no members until the worker comes back under the
// same id, holding nothing. The survivors keep their state through the
// wait; the generation that ends it resumes from their memory (the
// restarted worker's range from its right neighbour's replica), at most
// one step before the newest step reached, with no checkpoint read, and
// ends bit for bit as an undisturbed three-rank run.
func TestInMemoryWorkerRestartEndsTheWait(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const steps = 24
	spec, _ := testSpec(t, steps, 3, steps) // checkpoint only at the end
	spec.Batch, spec.MinWorkers = 12, 3
	spec.BudgetFLOPs = float64(steps) * spec.Model.TrainFLOPs(spec.Batch).Total()
	raw, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecovery(steps)
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 3, OnStep: rec.onStep, OnTrainer: rec.onTrainer,
		RingDeadline: 5 * time.Second, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Client.Submit(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool { return j.Ledger.StepsDone >= 8 || ended(j) })
	if ended(j) || len(j.Members) != 3 {
		t.Fatalf("before the fault: job %s with members %v", j.Status, j.Members)
	}
	gen, victim := j.Generation, j.Members[1]
	c.KillWorker(victim)
	j = waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool { return j.Status == coordinator.StatusWaiting || ended(j) })
	if j.Status != coordinator.StatusWaiting || j.MemorySource == nil || j.MemorySource.Generation != gen {
		t.Fatalf("after the kill: job %s, memory source %+v; want waiting with generation %d's memory", j.Status, j.MemorySource, gen)
	}
	restarted := time.Now()
	if err := c.StartWorker(victim); err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, ctx, c, sub.ID, ended)
	if j.Status != coordinator.StatusCompleted || j.Ledger.StepsDone != steps {
		t.Fatalf("job ended %s at %d/%d steps: %s", j.Status, j.Ledger.StepsDone, steps, j.Reason)
	}
	if j.ResumeMemory == nil || j.ResumeMemory.From != gen {
		t.Fatalf("the last generation %d resumed from memory %+v, checkpoint %+v; want the memory of generation %d", j.Generation, j.ResumeMemory, j.ResumeFrom, gen)
	}
	rec.mu.Lock()
	reached := rec.last[gen]
	took := rec.first[j.Generation].Sub(restarted)
	final := rec.final
	rec.mu.Unlock()
	if lost := reached - j.StartStep; lost < 0 || lost > 1 {
		t.Fatalf("generation %d reached step %d; generation %d resumed at %d: %d steps lost, want at most 1", gen, reached, j.Generation, j.StartStep, lost)
	}
	checkResumedFromMemory(t, c, j.Members, 3)
	if redone := j.Ledger.FLOPsSpent - j.Ledger.FLOPsUsed; redone > j.Ledger.FLOPsPerStep {
		t.Fatalf("ledger: %g FLOPs redone, more than one step's %g", redone, j.Ledger.FLOPsPerStep)
	}
	want := undisturbed(t, spec, 3, steps)
	if got, w := paramsSHA(final), paramsSHA(want); got != w {
		t.Fatalf("final parameters sha256 %s, an undisturbed three-rank run gives %s", got, w)
	}
	t.Logf("killed %s in generation %d (newest step %d); the job waited; generation %d resumed from memory at step %d, first step %.2fs after the restart",
		victim, gen, reached, j.Generation, j.StartStep, took.Seconds())
}

// TestInMemoryReshardsToASmallerGeneration kills rank 2 of a four-worker
// generation. Three workers remain, and batch 8 splits over two: the next
// generation is workers 0 and 1, each with a range twice as long, which
// they fetch from whichever survivor holds each old range; the lost range
// comes from rank 3's replica, and rank 3 serves it though it is no longer
// a member. No checkpoint is read, at most one step is lost, and the loss
// curve continues one process's to 1e-5 (only the summation order differs).
func TestInMemoryReshardsToASmallerGeneration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const steps = 24
	spec, raw := testSpec(t, steps, 4, steps)
	rec := newRecovery(steps)
	log := newStepLog()
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 4, RingDeadline: 5 * time.Second, Log: testLogger(t),
		OnTrainer: rec.onTrainer,
		OnStep: func(w, job string, gen uint64, rank int, res train.StepResult) {
			rec.onStep(w, job, gen, rank, res)
			log.record(w, job, gen, rank, res)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Client.Submit(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, ctx, c, sub.ID, func(j coordinator.Job) bool { return j.Ledger.StepsDone >= 8 || ended(j) })
	if ended(j) || len(j.Members) != 4 {
		t.Fatalf("before the fault: job %s with members %v", j.Status, j.Members)
	}
	gen, old, victim := j.Generation, j.Members, j.Members[2]
	killed := time.Now()
	c.KillWorker(victim)
	j = waitJob(t, ctx, c, sub.ID, ended)
	if j.Status != coordinator.StatusCompleted || j.Ledger.StepsDone != steps {
		t.Fatalf("job ended %s at %d/%d steps: %s", j.Status, j.Ledger.StepsDone, steps, j.Reason)
	}
	m := j.ResumeMemory
	if m == nil || m.From != gen || len(j.Members) != 2 {
		t.Fatalf("generation %d of %v resumed from memory %+v; want generation %d's, on two workers", j.Generation, j.Members, m, gen)
	}
	if w, r := m.Holder(2); w != old[3] || r != 3 {
		t.Fatalf("the lost range 2 is served by %s (rank %d), want its replica on %s (rank 3)", w, r, old[3])
	}
	rec.mu.Lock()
	reached, took := rec.last[gen], rec.first[j.Generation].Sub(killed)
	rec.mu.Unlock()
	if lost := reached - j.StartStep; lost < 0 || lost > 1 {
		t.Fatalf("generation %d reached step %d, the next resumed at %d: %d steps lost", gen, reached, j.StartStep, lost)
	}
	checkResumedFromMemory(t, c, []string{old[0], old[1], old[3]}, 2)
	worst := compareWithSingleProcess(t, spec, steps, log)
	t.Logf("4 → 2 workers: killed %s (rank 2) at step %d; generation %d resumed from memory at step %d, first step %.2fs after the kill; worst relative loss difference to one process %.2g",
		victim, reached, j.Generation, j.StartStep, took.Seconds(), worst)
}

// TestInMemoryGrowsWhenAWorkerJoins: a job runs on one worker; a second
// joins mid-job. The running worker stops at once (the leader will add the
// newcomer), and the two-worker generation resumes from its memory: the
// newcomer fetches everything, nothing is read from disk, no step is
// lost, and the loss curve continues one process's to 1e-5.
func TestInMemoryGrowsWhenAWorkerJoins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const steps = 60 // one worker is quick: the join takes effect some steps later
	spec, raw := testSpec(t, steps, 2, steps)
	rec := newRecovery(steps)
	log := newStepLog()
	var (
		mu     sync.Mutex
		cl     *Cluster
		joined time.Time
		gen    uint64
	)
	c, err := Start(ctx, Options{Dir: t.TempDir(), DataRoot: dataRoot(t), Workers: 1, RingDeadline: 5 * time.Second, Log: testLogger(t),
		OnTrainer: rec.onTrainer,
		OnStep: func(w, job string, g uint64, rank int, res train.StepResult) {
			rec.onStep(w, job, g, rank, res)
			log.record(w, job, g, rank, res)
			mu.Lock()
			defer mu.Unlock()
			if res.Step != 5 || !joined.IsZero() {
				return
			}
			// One worker is quick: hold it at step 5 while the second
			// joins and the running generation notices, so that the join
			// takes effect mid-job.
			joined, gen = time.Now(), g
			if err := cl.StartWorker("worker-9"); err != nil {
				t.Error(err)
			}
			time.Sleep(1500 * time.Millisecond)
		}})
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
	if j.Status != coordinator.StatusCompleted || j.Ledger.StepsDone != steps {
		t.Fatalf("job ended %s at %d/%d steps: %s", j.Status, j.Ledger.StepsDone, steps, j.Reason)
	}
	if m := j.ResumeMemory; m == nil || m.From != gen || len(j.Members) != 2 {
		t.Fatalf("generation %d of %v resumed from memory %+v; want generation %d's on two workers", j.Generation, j.Members, m, gen)
	}
	mu.Lock()
	rec.mu.Lock()
	reached, took := rec.last[gen], rec.first[j.Generation].Sub(joined)
	rec.mu.Unlock()
	mu.Unlock()
	if reached >= steps {
		t.Fatalf("the join took effect only after the last step %d", reached)
	}
	if lost := reached - j.StartStep; lost != 0 {
		t.Fatalf("generation %d reached step %d, the next resumed at %d", gen, reached, j.StartStep)
	}
	checkResumedFromMemory(t, c, j.Members, 0)
	worst := compareWithSingleProcess(t, spec, steps, log)
	t.Logf("1 → 2 workers: joined at step %d; generation %d resumed from memory at step %d, first step %.2fs after the join (1.5 s of it the test holding step 5); worst relative loss difference %.2g",
		reached, j.Generation, j.StartStep, took.Seconds(), worst)
}
