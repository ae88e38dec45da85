package worker

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/jobspec"
	"github.com/modcoord/modcoord/train"
)

// Options configure a worker process.
type Options struct {
	ID      string // unique in the cluster; the pod name on Kubernetes
	Cluster string
	Etcd    *clientv3.Client
	// AssignmentTrust is the cluster CA: when set, the worker acts only
	// on assignments signed by a coordinator certificate of it
	// (coordinator.WatchOptions). Nil: a cluster without certificates.
	AssignmentTrust *x509.CertPool
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
	// HangTimeout: a run that makes no progress (no step, no restore, no
	// poll of the final commit) for this long takes the worker out of the
	// cluster until it ends (watchdog.go). 0: DefaultHangTimeout of the
	// ring deadline; negative: never. It must exceed the ring deadline
	// plus the slowest step and the longest restore.
	HangTimeout time.Duration
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
	OnStep func(job string, generation uint64, rank int, res train.StepResult)
	// OnTrainer, if set, gets each generation's trainer once it is ready
	// (after any restore), before its first step, on the goroutine that
	// trains it; with OnStep, tests inject faults (a corrupted weight).
	OnTrainer func(job string, generation uint64, rank int, tr *train.Trainer)

	// held is the last stopped run's in-memory state, served to peers
	// (set by Run).
	held *heldState
	// startedAt is this process's start, as registered (set by Run): its
	// memory reports carry it, so that the leader can tell them from the
	// reports of an earlier process with the same id.
	startedAt time.Time
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
	if o.HangTimeout == 0 {
		ring := o.RingDeadline
		if ring <= 0 {
			ring = allreduce.DefaultDeadline
		}
		o.HangTimeout = DefaultHangTimeout(ring)
	}
	host, _ := os.Hostname()
	// One WorkerInfo for the first registration, every re-join and every
	// load report, so that they publish the same start time.
	self := coordinator.WorkerInfo{ID: o.ID, Host: host, StartedAt: time.Now().UTC()}
	o.startedAt = self.StartedAt
	reg, err := coordinator.Register(ctx, o.Etcd, o.Cluster, self, o.LeaseTTL)
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
	o.held = &heldState{o: o}
	defer o.held.close()

	var cur *run
	// stop ends the current run and reports whether the watchdog found it
	// hung (then the registration is closed and must be made again).
	stop := func() (hung bool) {
		if cur != nil {
			cur.cancel()
			<-cur.done
			hung = cur.hung.Load()
			cur = nil
		}
		return hung
	}
	defer stop()
	assignments := coordinator.WatchAssignmentsWith(ctx, o.Etcd, o.Cluster, coordinator.WatchOptions{Trust: o.AssignmentTrust, Log: o.Log})
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
			// A failed run that reported its memory needs no re-join: the
			// report itself makes the leader form a new generation.
			failed, hung := cur.failed && !cur.reported, cur.hung.Load()
			cur = nil
			if failed || hung {
				// The generation cannot go on (a peer vanished from the ring, a
				// report was refused) but membership may look unchanged to the
				// coordinator. Leaving and re-joining makes it form a new
				// generation, which resumes from the last committed checkpoint.
				if reg, err = rejoin(ctx, o, reg, self); err != nil {
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
		if a.Canceled || a.Status.Terminal() {
			o.held.release(a.Job, a.Generation+1)
		}
		if cur != nil && cur.job == a.Job {
			if a.Generation == cur.generation && rank >= 0 && !a.Canceled && a.Status == coordinator.StatusRunning {
				continue // the same generation, re-announced
			}
			if a.Canceled {
				// Ask every rank to stop at the same step; give it a moment.
				cur.requestStop()
				select {
				case <-cur.done:
				case <-time.After(30 * time.Second):
				}
			}
			if stop() {
				if reg, err = rejoin(ctx, o, reg, self); err != nil {
					return err
				}
				continue
			}
		}
		if rank < 0 || a.Canceled || a.Status != coordinator.StatusRunning || cur != nil {
			continue
		}
		if staleAssignment(ctx, o, a) {
			// We joined late (e.g. restarted within the coordinator's debounce):
			// this generation has committed past its start, so replaying it would
			// redo work. Leaving and re-joining forms a fresh generation.
			o.Log.Warn("assignment is older than the job's last commit; re-joining", "job", a.Job, "generation", a.Generation)
			if reg, err = rejoin(ctx, o, reg, self); err != nil {
				return err
			}
			continue
		}
		cur = startRun(ctx, o, a, rank)
		go watchRun(ctx, cur, reg, o.HangTimeout, o.Metrics, o.Log)
		go publishLoad(ctx, o, cur, reg, self)
	}
}

// staleAssignment reports whether the job committed a checkpoint newer than
// the one the assignment's generation started from. When no coordinator
// answers (no quorum, a partition) it counts the assignment as stale:
// re-joining costs one generation, while replaying a generation that
// committed past its start redoes its work (seen in the chaos soak).
func staleAssignment(ctx context.Context, o Options, a coordinator.Assignment) bool {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return true
			case <-time.After(time.Second):
			}
		}
		var view coordinator.CheckpointsView
		if view, err = o.Coordinator.Checkpoints(ctx, a.Job); err == nil {
			return view.Checkpoint != nil && (a.Checkpoint == nil || view.Checkpoint.Step > a.Checkpoint.Step)
		}
	}
	o.Log.Warn("cannot tell whether the assignment is older than the job's last commit; re-joining to be safe", "job", a.Job, "generation", a.Generation, "err", err)
	return true
}

// rejoin drops the worker's registration, waits long enough for the
// coordinator to notice (a lease TTL covers its debounce), and registers again.
func rejoin(ctx context.Context, o Options, reg *coordinator.Registration, self coordinator.WorkerInfo) (*coordinator.Registration, error) {
	o.Log.Info("leaving and re-joining so that a new generation forms", "after", o.LeaseTTL)
	if err := reg.Close(); err != nil {
		o.Log.Warn("leave", "err", err)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(o.LeaseTTL):
	}
	reg, err := coordinator.Register(ctx, o.Etcd, o.Cluster, self, o.LeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("re-register worker %s: %w", o.ID, err)
	}
	return reg, nil
}
