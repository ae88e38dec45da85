package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/train"
)

// run is one generation of one job on this worker.
type run struct {
	job        string
	generation uint64
	trainer    *train.Trainer
	cancel     context.CancelFunc
	done       chan struct{}
	failed     bool // ended with an error another generation may fix
	// freeze stops the run keeping its state for the next generation
	// (errFrozen); mem is that state once it is initialised, and
	// reported says whether the coordinator has its holdings.
	freeze   func()
	mem      *memory
	reported bool
	progress progress
	hung     atomic.Bool // the watchdog took the worker out of the cluster
	compute  computeAverage
}

// requestStop asks every rank to stop after the next step. A run whose
// start failed before its trainer existed has nothing to stop (its done
// channel is closed or about to be).
func (r *run) requestStop() {
	if r.trainer != nil {
		r.trainer.RequestStop()
	}
}

func startRun(parent context.Context, o Options, a coordinator.Assignment, rank int) *run {
	ctx, cancel := context.WithCancelCause(parent)
	r := &run{job: a.Job, generation: a.Generation, cancel: func() { cancel(nil) }, freeze: func() { cancel(errFrozen) }, done: make(chan struct{})}
	r.progress.beat()
	log := o.Log.With("job", a.Job, "generation", a.Generation, "rank", rank, "world", len(a.Members))
	ready := make(chan struct{})
	go func() {
		defer close(r.done)
		err := r.train(ctx, o, a, rank, log, ready)
		if r.mem != nil {
			// Served before it is reported: the next generation may
			// fetch from it as soon as the leader has the report.
			o.held.keep(r.mem.store)
		}
		defer func() {
			if r.mem != nil && (r.failed || errors.Is(context.Cause(ctx), errFrozen)) {
				r.reported = reportMemory(parent, o, a, r.mem.store, log)
			}
		}()
		switch {
		case err == nil:
			log.Info("generation finished")
		case ctx.Err() != nil:
			log.Info("generation stopped", "reason", context.Cause(ctx))
		default:
			log.Error("generation failed", "err", err)
			var fatal *fatalError
			var diverged *train.NonFiniteError // no generation trains past a NaN
			r.failed = !errors.As(err, &fatal) && !errors.As(err, &diverged)
			if !r.failed {
				if _, ferr := o.Coordinator.Fail(context.Background(), a.Job, coordinator.FailReport{Generation: a.Generation, Reason: err.Error()}); ferr != nil {
					log.Error("report failure", "err", ferr)
				}
			}
		}
	}()
	select { // the trainer must exist before Run may call RequestStop
	case <-ready:
	case <-r.done:
	}
	return r
}

// fatalError is a failure that another generation cannot fix (a missing
// data file, a bad spec): the job is failed rather than retried.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func (r *run) train(ctx context.Context, o Options, a coordinator.Assignment, rank int, log *slog.Logger, ready chan<- struct{}) error {
	spec := a.Spec
	// etcd is writable by more than the coordinator, so an assignment's
	// spec is checked again, exactly as submit checked it.
	if err := spec.Validate(o.SpecLimits); err != nil {
		close(ready)
		return &fatalError{fmt.Errorf("assigned job spec: %w", err)}
	}
	ds, err := spec.OpenCorpus(o.DataRoot)
	if err != nil {
		close(ready)
		return &fatalError{err}
	}
	defer ds.Close()
	ring, err := allreduce.NewRing(o.Transport, allreduce.Config{
		Job: a.Job, Generation: a.Generation, Rank: rank, World: len(a.Members),
		Deadline: o.RingDeadline, Window: o.RingWindow, ChunkBytes: o.RingChunkBytes, Metrics: o.Metrics.ring(),
	})
	if err != nil {
		close(ready)
		return fmt.Errorf("join ring: %w", err)
	}
	defer ring.Close()
	coll := &timedCollective{inner: ring}
	tr, err := train.NewTrainer(train.TrainerConfig{
		Model: spec.Model, Optim: spec.Optim, GlobalBatch: spec.Batch, TotalSteps: a.TotalSteps,
		Seed: spec.Seed, Rank: rank, World: len(a.Members), Tokenizer: spec.Tokenizer, Sync: spec.Sync,
	}, ds, coll)
	if err != nil {
		close(ready)
		return &fatalError{err}
	}
	defer tr.Close()
	r.trainer = tr
	close(ready)

	store, err := checkpoint.NewDirStore(o.CheckpointDir)
	if err != nil {
		return &fatalError{err}
	}
	// In-memory recovery replays each step's AdamW update from the reduced
	// gradient, which DiLoCo's local inner steps do not have: a DiLoCo run
	// keeps no replica and resumes from its outer-boundary checkpoint.
	var mem *memory
	if !tr.IsDiLoCo() {
		if mem, err = newMemory(o, a, rank, tr); err != nil {
			return err
		}
		defer mem.close()
	}
	var nb neighbourMoments
	switch {
	case a.Memory != nil:
		nb, err = restoreFromPeers(ctx, o, a, rank, tr, mem, o.held, log)
	case a.Checkpoint != nil:
		var m *checkpoint.Manifest
		if m, err = restore(ctx, o, a, tr, store, log); err == nil {
			nb, err = loadNeighbour(ctx, store, m, tr, mem)
		}
	case spec.InitFrom != nil:
		nb, err = initFrom(ctx, o, spec.InitFrom, tr, mem, log)
	}
	o.Metrics.checkpointReads(store.ShardReads())
	if err != nil {
		return err
	}
	r.progress.beat()
	if mem != nil {
		opt := tr.Optimizer()
		if err := mem.store.Init(tr.StepsDone(), tr.Model().Params(), opt.M, opt.V, nb.m, nb.v); err != nil {
			return err
		}
		r.mem = mem
	}
	start := tr.StepsDone()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go watchForReplacement(watchCtx, o, a, r.freeze)
	log.Info("training", "from_step", tr.StepsDone(), "to_step", a.TotalSteps, "model", spec.Model.String())
	if o.OnTrainer != nil {
		o.OnTrainer(a.Job, a.Generation, rank, tr)
	}

	ck := newCheckpointer(o, a, tr, store, rank, log)
	defer ck.close()
	var rep *reporter
	if rank == 0 {
		rep = newReporter(ctx, o, a, tr, log)
		defer rep.close()
	}
	every := spec.CheckpointEvery
	var tokens float64             // trained by the job in this generation
	var lastOuter train.OuterStats // DiLoCo's outer steps already recorded
	if a.Memory != nil && tr.StepsDone() == a.TotalSteps {
		// Resumed from memory after the last step: the stopped generation
		// may not have committed its checkpoint, and the job completes
		// only once that is committed.
		if err := ck.start(ctx); err != nil {
			return err
		}
	}
	coll.take()
	lastEnd := time.Now()
	for tr.StepsDone() < a.TotalSteps {
		// A one-rank trainer has no collective to notice a canceled or
		// frozen run: check between steps.
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		res, err := tr.Step(ctx)
		if err != nil {
			return err
		}
		if err := mem.afterStep(ctx, tr, res); err != nil {
			return err
		}
		if res.Step == start+1 {
			// Every rank has restored: the previous generation's state
			// this worker served is no longer needed.
			o.held.release(a.Job, a.Generation)
		}
		r.progress.beat()
		// Compute is all this rank did since its last step ended, outside
		// the collectives: whatever makes it slow (a slow core, GC, its
		// own I/O) makes its peers wait for it in the next collective.
		r.compute.observe(res.Step, t0.Sub(lastEnd)+time.Since(t0)-coll.take())
		lastEnd = time.Now()
		o.Metrics.observeStep(spec.Model, spec.Batch, len(a.Members), res, time.Since(t0))
		tokens += float64(res.Tokens)
		st := tr.OuterStats()
		o.Metrics.observeBus(train.OuterStats{Steps: st.Steps - lastOuter.Steps, Elapsed: st.Elapsed - lastOuter.Elapsed},
			float64(ring.Stats().SentBytes)/tokens)
		lastOuter = st
		if o.OnStep != nil {
			o.OnStep(a.Job, a.Generation, rank, res)
		}
		var val *float64
		if res.Step%spec.EvalEvery == 0 || res.Step == a.TotalSteps {
			// Every rank evaluates its share of the same windows at the same
			// steps; the all-reduce inside gives all of them the loss.
			v, err := tr.EvalLoss(ctx, spec.EvalWindows)
			if err != nil {
				return err
			}
			val = &v
		}
		if rep != nil {
			rep.send(res, time.Since(t0), val)
		}
		switch {
		case res.Stop || res.Step == a.TotalSteps:
			if err := ck.start(ctx); err != nil {
				return err
			}
		case every > 0 && res.Step%every == 0:
			if err := ck.startUnlessBusy(ctx, res.Step); err != nil {
				return err
			}
		}
		if res.Stop {
			return ck.wait(ctx)
		}
	}
	if err := ck.wait(ctx); err != nil {
		return err
	}
	if rank == 0 {
		rep.flush(o.RingDeadline)
		// The job is complete once its final checkpoint is committed, which
		// happens when the last rank's shard report arrives.
		r.progress.beat()
		if err := waitCommitted(ctx, o.Coordinator, a.Job, tr.StepsDone(), 2*o.RingDeadline+10*time.Second, r.progress.beat); err != nil {
			return err
		}
		if _, err := o.Coordinator.Complete(ctx, a.Job, coordinator.CompleteReport{Generation: a.Generation, Step: tr.StepsDone()}); err != nil {
			return fmt.Errorf("report completion: %w", err)
		}
	}
	return nil
}

// waitCommitted polls until the job's last committed checkpoint is at step.
// Every poll is progress (beat) for the watchdog.
func waitCommitted(ctx context.Context, c *coordinator.Client, job string, step int64, timeout time.Duration, beat func()) error {
	deadline := time.Now().Add(timeout)
	for {
		beat()
		view, err := c.Checkpoints(ctx, job)
		if err == nil && view.Checkpoint != nil && view.Checkpoint.Step >= step {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("final checkpoint of step %d not committed after %s (last error: %v)", step, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// restore loads the newest committed checkpoint that verifies, newest
// first among the job's retained ones; every rank reads the same shared
// volume, so every rank picks the same one.
func restore(ctx context.Context, o Options, a coordinator.Assignment, tr *train.Trainer, store *checkpoint.DirStore, log *slog.Logger) (*checkpoint.Manifest, error) {
	manifests := []*checkpoint.Manifest{a.Checkpoint}
	if view, err := o.Coordinator.Checkpoints(ctx, a.Job); err == nil {
		for i := len(view.Retained) - 1; i >= 0; i-- {
			if m := view.Retained[i]; m.Step < a.Checkpoint.Step {
				manifests = append(manifests, &m)
			}
		}
	} else {
		log.Warn("list retained checkpoints; only the last committed one can be tried", "err", err)
	}
	m, skipped, err := store.NewestValid(ctx, manifests)
	for _, s := range skipped {
		log.Warn("checkpoint damaged; falling back to an older one", "skipped", s.String())
	}
	if err != nil {
		return nil, fmt.Errorf("no committed checkpoint of job %s verifies: %w", a.Job, err)
	}
	if err := tr.Restore(ctx, store, m, true); err != nil {
		return nil, err
	}
	o.Metrics.resumed("checkpoint")
	log.Info("resumed", "step", m.Step, "written_by_world", m.World)
	if tr.IsDiLoCo() && !tr.InnerStateRestored() {
		log.Warn("DiLoCo inner AdamW state not restored (the checkpoint was written by another world size): inner moments restart at zero", "written_by_world", m.World)
	}
	return m, nil
}

// initFrom loads the weights (and optionally the optimizer state) of the
// checkpoint a new job starts from. Every rank reads the same shared
// volume, so every rank starts from the same weights.
func initFrom(ctx context.Context, o Options, from *jobspec.InitFrom, tr *train.Trainer, mem *memory, log *slog.Logger) (neighbourMoments, error) {
	ck, err := train.OpenCheckpoint(ctx, filepath.Join(o.CheckpointDir, filepath.FromSlash(from.Checkpoint)))
	if err != nil {
		return neighbourMoments{}, &fatalError{fmt.Errorf("init_from.checkpoint %q: %w", from.Checkpoint, err)}
	}
	defer func() { o.Metrics.checkpointReads(ck.Store.ShardReads()) }()
	for _, s := range ck.Skipped {
		log.Warn("init_from: checkpoint damaged; using an older one", "skipped", s.String())
	}
	if err := tr.InitFrom(ctx, ck, from.Optimizer); err != nil {
		return neighbourMoments{}, &fatalError{err}
	}
	var nb neighbourMoments
	if from.Optimizer {
		// The replica of the left neighbour starts from the same moments
		// its owner loaded.
		if nb, err = loadNeighbour(ctx, ck.Store, ck.Manifest, tr, mem); err != nil {
			return neighbourMoments{}, &fatalError{err}
		}
	}
	log.Info("initialised from checkpoint", "checkpoint", ck.Dir, "step", ck.Manifest.Step, "optimizer", from.Optimizer)
	return nb, nil
}
