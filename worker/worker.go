package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/mod"
)

// Options configure a worker process.
type Options struct {
	ID      string // unique in the cluster; the pod name on Kubernetes
	Cluster string
	Etcd    *clientv3.Client
	// Coordinator is the API client for progress and checkpoint reports.
	Coordinator *coordinator.Client
	// Transport carries the ring all-reduce (NATS in production).
	Transport allreduce.Transport
	// CheckpointDir is the shared checkpoint volume, the same path on every worker.
	CheckpointDir string
	// DataRoot is the directory a job's data path is relative to; nothing
	// outside it is ever read (jobspec.OpenData). Empty: the working directory.
	DataRoot string
	// SpecLimits bound what an assigned spec may ask for, as the
	// coordinator's do at submission (the zero value: jobspec's defaults).
	SpecLimits   jobspec.Limits
	LeaseTTL     time.Duration // etcd lease; a dead worker is noticed after this
	RingDeadline time.Duration // a silent peer fails a collective after this
	// RingWindow and RingChunkBytes tune the all-reduce pipeline (0: the
	// allreduce defaults, sized for loopback; a cluster with more latency
	// per hop wants a deeper window). Every worker of a job must use the
	// same values: a rank sizes what it accepts ahead of time by its own
	// window, and cuts chunks by its own chunk size.
	RingWindow     int
	RingChunkBytes int
	Metrics        *Metrics // may be nil
	Log            *slog.Logger
	// OnStep, if set, sees every step's result (tests compare loss curves).
	OnStep func(job string, generation uint64, rank int, res StepResult)
}

// Run registers the worker and trains whatever the coordinator assigns it,
// one generation at a time, until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	o.Log = o.Log.With("worker", o.ID)
	if o.LeaseTTL == 0 {
		o.LeaseTTL = 10 * time.Second
	}
	host, _ := os.Hostname()
	reg, err := coordinator.Register(ctx, o.Etcd, o.Cluster, coordinator.WorkerInfo{ID: o.ID, Host: host, StartedAt: time.Now().UTC()}, o.LeaseTTL)
	if err != nil {
		return fmt.Errorf("register worker %s: %w", o.ID, err)
	}
	defer func() {
		// reg is nil after a failed rejoin, which has closed the old one.
		if reg != nil {
			reg.Close()
		}
	}()
	o.Log.Info("registered", "key", reg.Key())

	var cur *run
	stop := func() {
		if cur != nil {
			cur.cancel()
			<-cur.done
			cur = nil
		}
	}
	defer stop()
	assignments := coordinator.WatchAssignments(ctx, o.Etcd, o.Cluster)
	for {
		var a coordinator.Assignment
		var ok bool
		var finished <-chan struct{}
		if cur != nil {
			finished = cur.done
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-finished:
			failed := cur.failed
			cur = nil
			if failed {
				// The generation cannot go on (a peer vanished from the ring, a
				// report was refused) but membership may look unchanged to the
				// coordinator. Leaving and re-joining makes it form a new
				// generation, which resumes from the last committed checkpoint.
				if reg, err = rejoin(ctx, o, reg, host); err != nil {
					return err
				}
			}
			continue
		case a, ok = <-assignments:
			if !ok {
				return ctx.Err()
			}
		}
		rank := a.Rank(o.ID)
		if cur != nil && cur.job == a.Job {
			if a.Generation == cur.generation && rank >= 0 && !a.Canceled && a.Status == coordinator.StatusRunning {
				continue // the same generation, re-announced
			}
			if a.Canceled {
				// Ask every rank to stop at the same step; give it a moment.
				cur.trainer.RequestStop()
				select {
				case <-cur.done:
				case <-time.After(30 * time.Second):
				}
			}
			stop()
		}
		if rank < 0 || a.Canceled || a.Status != coordinator.StatusRunning || cur != nil {
			continue
		}
		if staleAssignment(ctx, o, a) {
			// We joined late (e.g. restarted within the coordinator's debounce):
			// this generation has committed past its start, so replaying it would
			// redo work. Leaving and re-joining forms a fresh generation.
			o.Log.Warn("assignment is older than the job's last commit; re-joining", "job", a.Job, "generation", a.Generation)
			if reg, err = rejoin(ctx, o, reg, host); err != nil {
				return err
			}
			continue
		}
		cur = startRun(ctx, o, a, rank)
	}
}

// staleAssignment reports whether the job committed a checkpoint newer than
// the one the assignment's generation started from.
func staleAssignment(ctx context.Context, o Options, a coordinator.Assignment) bool {
	view, err := o.Coordinator.Checkpoints(ctx, a.Job)
	return err == nil && view.Checkpoint != nil && (a.Checkpoint == nil || view.Checkpoint.Step > a.Checkpoint.Step)
}

// rejoin drops the worker's registration, waits long enough for the
// coordinator to notice (a lease TTL covers its debounce), and registers again.
func rejoin(ctx context.Context, o Options, reg *coordinator.Registration, host string) (*coordinator.Registration, error) {
	o.Log.Info("leaving and re-joining so that a new generation forms", "after", o.LeaseTTL)
	if err := reg.Close(); err != nil {
		o.Log.Warn("leave", "err", err)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.LeaseTTL):
	}
	reg, err := coordinator.Register(ctx, o.Etcd, o.Cluster, coordinator.WorkerInfo{ID: o.ID, Host: host, StartedAt: time.Now().UTC()}, o.LeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("re-register worker %s: %w", o.ID, err)
	}
	return reg, nil
}

// run is one generation of one job on this worker.
type run struct {
	job        string
	generation uint64
	trainer    *Trainer
	cancel     context.CancelFunc
	done       chan struct{}
	failed     bool // ended with an error another generation may fix
}

func startRun(ctx context.Context, o Options, a coordinator.Assignment, rank int) *run {
	ctx, cancel := context.WithCancel(ctx)
	r := &run{job: a.Job, generation: a.Generation, cancel: cancel, done: make(chan struct{})}
	log := o.Log.With("job", a.Job, "generation", a.Generation, "rank", rank, "world", len(a.Members))
	ready := make(chan struct{})
	go func() {
		defer close(r.done)
		err := r.train(ctx, o, a, rank, log, ready)
		switch {
		case err == nil:
			log.Info("generation finished")
		case ctx.Err() != nil:
			log.Info("generation stopped", "reason", context.Cause(ctx))
		default:
			log.Error("generation failed", "err", err)
			var fatal *fatalError
			r.failed = !errors.As(err, &fatal)
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
	ds, err := loadData(o.DataRoot, spec.Data)
	if err != nil {
		close(ready)
		return &fatalError{err}
	}
	ring, err := allreduce.NewRing(o.Transport, allreduce.Config{
		Job: a.Job, Generation: a.Generation, Rank: rank, World: len(a.Members),
		Deadline: o.RingDeadline, Window: o.RingWindow, ChunkBytes: o.RingChunkBytes, Metrics: o.Metrics.ring(),
	})
	if err != nil {
		close(ready)
		return fmt.Errorf("join ring: %w", err)
	}
	defer ring.Close()
	tr, err := NewTrainer(TrainerConfig{
		Model: spec.Model, Optim: spec.Optim, GlobalBatch: spec.Batch, TotalSteps: a.TotalSteps,
		Seed: spec.Seed, Rank: rank, World: len(a.Members),
	}, ds, ring)
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
	if a.Checkpoint != nil {
		if err := restore(ctx, o, a, tr, store, log); err != nil {
			return err
		}
	}
	log.Info("training", "from_step", tr.StepsDone(), "to_step", a.TotalSteps, "model", spec.Model.String())

	ck := newCheckpointer(o, a, tr, store, rank, log)
	defer ck.close()
	var rep *reporter
	if rank == 0 {
		rep = newReporter(ctx, o, a, tr, log)
		defer rep.close()
	}
	every := spec.CheckpointEvery
	for tr.StepsDone() < a.TotalSteps {
		t0 := time.Now()
		res, err := tr.Step(ctx)
		if err != nil {
			return err
		}
		o.Metrics.observeStep(spec.Model, spec.Batch, len(a.Members), res, time.Since(t0))
		if o.OnStep != nil {
			o.OnStep(a.Job, a.Generation, rank, res)
		}
		if rep != nil {
			rep.send(res, time.Since(t0))
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
		if err := waitCommitted(ctx, o.Coordinator, a.Job, tr.StepsDone(), 2*o.RingDeadline+10*time.Second); err != nil {
			return err
		}
		if _, err := o.Coordinator.Complete(ctx, a.Job, coordinator.CompleteReport{Generation: a.Generation, Step: tr.StepsDone()}); err != nil {
			return fmt.Errorf("report completion: %w", err)
		}
	}
	return nil
}

// waitCommitted polls until the job's last committed checkpoint is at step.
func waitCommitted(ctx context.Context, c *coordinator.Client, job string, step int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
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
func restore(ctx context.Context, o Options, a coordinator.Assignment, tr *Trainer, store *checkpoint.DirStore, log *slog.Logger) error {
	candidates := []*coordinator.CheckpointManifest{a.Checkpoint}
	if view, err := o.Coordinator.Checkpoints(ctx, a.Job); err == nil {
		for i := len(view.Retained) - 1; i >= 0; i-- {
			if m := view.Retained[i]; m.Step < a.Checkpoint.Step {
				candidates = append(candidates, &m)
			}
		}
	} else {
		log.Warn("list retained checkpoints; only the last committed one can be tried", "err", err)
	}
	cfg, err := json.Marshal(tr.CheckpointConfig())
	if err != nil {
		return err
	}
	var manifests []*checkpoint.Manifest
	for _, c := range candidates {
		m, err := toCheckpointManifest(c, cfg)
		if err != nil {
			log.Warn("committed checkpoint record is unusable", "step", c.Step, "err", err)
			continue
		}
		manifests = append(manifests, m)
	}
	m, skipped, err := store.NewestValid(ctx, manifests)
	for _, s := range skipped {
		log.Warn("checkpoint damaged; falling back to an older one", "skipped", s.String())
	}
	if err != nil {
		return fmt.Errorf("no committed checkpoint of job %s verifies: %w", a.Job, err)
	}
	if err := tr.Restore(ctx, store, m, true); err != nil {
		return err
	}
	log.Info("resumed", "step", m.Step, "written_by_world", m.World)
	return nil
}

// toCheckpointManifest rebuilds the on-disk manifest from the coordinator's
// raft record of a committed checkpoint.
func toCheckpointManifest(c *coordinator.CheckpointManifest, cfg json.RawMessage) (*checkpoint.Manifest, error) {
	shards := make([]checkpoint.ShardInfo, len(c.Shards))
	for i, s := range c.Shards {
		shards[i] = checkpoint.ShardInfo{Rank: s.Rank, Lo: s.Lo, Hi: s.Hi, File: s.File, Bytes: s.Bytes,
			HeaderSHA256: s.HeaderSHA256, DataSHA256: s.SHA256}
	}
	return checkpoint.NewManifest(c.Job, c.Step, c.Generation, c.Total, cfg, shards)
}

// checkpointer writes this rank's shard in the background and reports it;
// at most one checkpoint is in flight.
type checkpointer struct {
	o       Options
	a       coordinator.Assignment
	tr      *Trainer
	store   *checkpoint.DirStore
	writer  *checkpoint.AsyncWriter
	rank    int
	log     *slog.Logger
	pending chan error // result of the checkpoint in flight, if any
	mu      sync.Mutex
}

func newCheckpointer(o Options, a coordinator.Assignment, tr *Trainer, store *checkpoint.DirStore, rank int, log *slog.Logger) *checkpointer {
	return &checkpointer{o: o, a: a, tr: tr, store: store, writer: checkpoint.NewAsyncWriter(store), rank: rank, log: log}
}

// start snapshots the shard (the only part that stalls training) and
// writes and reports it in the background.
func (c *checkpointer) start(ctx context.Context) error {
	if err := c.wait(ctx); err != nil {
		return err
	}
	meta, err := c.tr.ShardMeta(c.a.Job, c.a.Generation)
	if err != nil {
		return err
	}
	t0 := time.Now()
	p, err := c.writer.Snapshot(ctx, meta, c.tr.ShardState())
	if err != nil {
		return fmt.Errorf("checkpoint step %d: %w", meta.Step, err)
	}
	done := make(chan error, 1)
	c.pending = done
	go func() {
		info, err := p.Wait(ctx)
		if err != nil {
			done <- fmt.Errorf("write checkpoint shard of step %d: %w", meta.Step, err)
			return
		}
		c.o.Metrics.observeCheckpoint(p.Stall(), time.Since(t0))
		resp, err := c.o.Coordinator.ReportShard(ctx, c.a.Job, coordinator.ShardReport{
			Generation: c.a.Generation, Step: meta.Step,
			Shard: coordinator.CheckpointShard{Rank: info.Rank, Lo: info.Lo, Hi: info.Hi, File: info.File,
				Bytes: info.Bytes, SHA256: info.DataSHA256, HeaderSHA256: info.HeaderSHA256},
		})
		if errors.Is(err, coordinator.ErrStale) {
			// A newer checkpoint round began (another rank raced ahead after
			// a coordinator failover): this one is abandoned, not fatal.
			c.log.Warn("checkpoint round abandoned", "step", meta.Step, "err", err)
			done <- nil
			return
		}
		if err != nil {
			done <- fmt.Errorf("report checkpoint shard of step %d: %w", meta.Step, err)
			return
		}
		if resp.Committed && resp.Manifest != nil {
			c.committed(ctx, resp, meta.Config)
		}
		c.log.Debug("checkpoint shard written", "step", meta.Step, "stall", p.Stall(), "committed", resp.Committed)
		done <- nil
	}()
	return nil
}

// committed runs on the rank whose report completed the checkpoint: it
// writes MANIFEST.json, the on-disk mark of a commit, and then prunes
// (only now that a newer checkpoint is durable): the checkpoints that fell
// out of retention, and abandoned attempts older than every retained one,
// such as the shards of a round another rank skipped.
func (c *checkpointer) committed(ctx context.Context, resp coordinator.ShardResponse, cfg json.RawMessage) {
	m, err := toCheckpointManifest(resp.Manifest, cfg)
	if err == nil {
		err = c.store.WriteManifest(ctx, m)
	}
	if err != nil {
		c.log.Warn("write manifest of a committed checkpoint", "step", resp.Manifest.Step, "err", err)
		return
	}
	if len(resp.Retained) == 0 {
		// An older coordinator names only what it dropped; without the
		// retained list nothing else is known to be safe to delete.
		for _, d := range resp.Dropped {
			dir := c.store.StepDir(d.Job, d.Step, d.Generation)
			if err := os.RemoveAll(dir); err != nil {
				c.log.Warn("delete old checkpoint", "dir", dir, "err", err)
			}
		}
		return
	}
	// Prune wants every commit it knows of, newest first: the retained
	// ones, then the dropped ones (older), of which it keeps the first.
	var commits []*checkpoint.Manifest
	for _, group := range [][]coordinator.CheckpointManifest{resp.Retained, resp.Dropped} {
		for i := len(group) - 1; i >= 0; i-- {
			cm, err := toCheckpointManifest(&group[i], cfg)
			if err != nil {
				c.log.Warn("prune checkpoints: a committed manifest from the coordinator is invalid; deleting nothing", "step", group[i].Step, "err", err)
				return
			}
			commits = append(commits, cm)
		}
	}
	removed, err := c.store.Prune(ctx, m.Job, commits, len(resp.Retained))
	if err != nil {
		c.log.Warn("prune checkpoints", "err", err)
	}
	if len(removed) > 0 {
		c.log.Debug("pruned checkpoints", "dirs", removed)
	}
}

// startUnlessBusy starts a periodic checkpoint, unless the previous one is
// still being written or reported: then this round is skipped rather than
// stalling training. Waiting would hold this rank out of the ring, and a
// report can take seconds while the coordinators elect a new leader; its
// peers would then declare it silent and break the generation. A skipped
// round is never committed (this rank's shard is missing), so the next
// one supersedes it, as after a failover.
func (c *checkpointer) startUnlessBusy(ctx context.Context, step int64) error {
	busy, err := c.inFlight()
	if err != nil {
		return err
	}
	if busy {
		c.log.Warn("checkpoint round skipped: the previous one is still being written or reported", "step", step)
		c.o.Metrics.skippedCheckpoint()
		return nil
	}
	return c.start(ctx)
}

// inFlight reports, without blocking, whether a checkpoint is still being
// written or reported; the result of one that has finished is collected.
func (c *checkpointer) inFlight() (bool, error) {
	if c.pending == nil {
		return false, nil
	}
	select {
	case err := <-c.pending:
		c.pending = nil
		return false, err
	default:
		return true, nil
	}
}

// wait blocks until the checkpoint in flight is written and reported.
func (c *checkpointer) wait(ctx context.Context) error {
	if c.pending == nil {
		return nil
	}
	select {
	case err := <-c.pending:
		c.pending = nil
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *checkpointer) close() {
	if err := c.writer.Close(); err != nil {
		c.log.Warn("close checkpoint writer", "err", err)
	}
}

// reporter sends rank 0's progress to the coordinator without holding up
// training: only the latest report waits to be sent. A cancel answer asks
// every rank to stop.
type reporter struct {
	latest    chan coordinator.ProgressReport
	done      chan struct{}
	closeOnce sync.Once
}

func newReporter(ctx context.Context, o Options, a coordinator.Assignment, tr *Trainer, log *slog.Logger) *reporter {
	r := &reporter{latest: make(chan coordinator.ProgressReport, 1), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			select {
			case <-ctx.Done():
				return
			case p, ok := <-r.latest:
				if !ok {
					return
				}
				p.Generation, p.Worker = a.Generation, o.ID
				cancel, err := o.Coordinator.Progress(ctx, a.Job, p)
				if err != nil {
					log.Warn("report progress", "step", p.Step, "err", err)
					continue
				}
				if cancel {
					log.Info("job canceled; stopping after the next step")
					tr.RequestStop()
				}
			}
		}
	}()
	return r
}

func (r *reporter) send(res StepResult, took time.Duration) {
	p := coordinator.ProgressReport{Step: res.Step, Loss: res.Loss, Tokens: int64(res.Tokens), WallS: took.Seconds()}
	select {
	case old := <-r.latest: // coalesce with the unsent one
		p.Tokens += old.Tokens
		p.WallS += old.WallS
	default:
	}
	r.latest <- p
}

// flush sends the last report and waits, at most timeout, until it is
// through; the final step then shows in the job's progress before the job
// completes, even when a coordinator failover held earlier reports up.
func (r *reporter) flush(timeout time.Duration) {
	r.closeOnce.Do(func() { close(r.latest) })
	select {
	case <-r.done:
	case <-time.After(timeout):
	}
}

func (r *reporter) close() {
	r.closeOnce.Do(func() { close(r.latest) })
	<-r.done
}

// loadData reads a job's corpus from under the data root, refusing
// anything that is not a regular file inside it, or is too large.
func loadData(root, rel string) (*mod.Dataset, error) {
	if root == "" {
		root = "."
	}
	f, err := jobspec.OpenData(root, rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := jobspec.ReadFileLimited(f, jobspec.MaxDataBytes)
	if err != nil {
		return nil, fmt.Errorf("data %q: %w", rel, err)
	}
	return mod.NewDataset(b)
}
