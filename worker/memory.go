package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/peerstate"
	"github.com/modcoord/modcoord/shard"
	"github.com/modcoord/modcoord/train"
)

// In-memory recovery, the worker's side (coordinator/memory.go has the
// leader's, peerstate the state and its wire protocol). A run keeps its
// range and its left neighbour's in a peerstate.Store, replicated after
// every step. When the live worker set changes so that the leader will
// replace the generation, the run stops at once (errFrozen) rather than
// waiting for the ring to time out; its store is served to the next
// generation, and the worker reports what it holds. A generation whose
// assignment names a memory decision fetches its state from those stores
// and reads no checkpoint.

// errFrozen is the cause of a run stopped because its generation is about
// to be replaced: its state is kept for the next one.
var errFrozen = errors.New("the live workers changed: generation stopped, state kept in memory for the next one")

// memory is one run's store and its replication.
type memory struct {
	o     Options
	store *peerstate.Store
	rep   *peerstate.Replicator // nil with one rank
	wait  time.Duration
}

func newMemory(o Options, a coordinator.Assignment, rank int, tr *train.Trainer) (*memory, error) {
	store, err := peerstate.New(peerstate.Config{
		Job: a.Job, Generation: a.Generation, Rank: rank, Layout: tr.Layout(),
		Optim: a.Spec.Optim, Decay: tr.Optimizer().Decay, TotalSteps: a.TotalSteps,
	})
	if err != nil {
		return nil, err
	}
	m := &memory{o: o, store: store, wait: ringWait(o)}
	if _, lo, hi, ok := store.NeighbourRange(); ok {
		opt := tr.Optimizer()
		if m.rep, err = peerstate.NewReplicator(o.Transport, a.Job, a.Generation, rank, len(a.Members), opt.Hi-opt.Lo, hi-lo); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func ringWait(o Options) time.Duration {
	if o.RingDeadline > 0 {
		return o.RingDeadline
	}
	return 20 * time.Second
}

func (m *memory) close() {
	if m.rep != nil {
		m.rep.Close()
	}
}

// afterStep replicates a completed step: this rank's reduced gradient
// chunk (still in the gradient buffer, which AdamW and the all-gather do
// not touch) goes to the right neighbour, the own range is recorded, and
// the left neighbour's chunk replays its update on the replica.
func (m *memory) afterStep(ctx context.Context, tr *train.Trainer, res train.StepResult) error {
	if m == nil {
		return nil
	}
	params, opt := tr.Model().Params(), tr.Optimizer()
	if m.rep != nil {
		if err := m.rep.Send(res.Step, tr.Model().Grads()[opt.Lo:opt.Hi]); err != nil {
			return err
		}
	}
	if err := m.store.RecordOwn(res.Step, params, opt.M, opt.V); err != nil {
		return err
	}
	if m.rep == nil {
		return nil
	}
	chunk, err := m.rep.Receive(ctx, res.Step, m.wait)
	if err != nil {
		return err
	}
	return m.store.AdvanceNeighbour(res.Step, chunk, res.SumSquares, params)
}

// neighbourMoments are the left neighbour's AdamW moments as the
// generation starts, for its replica (nil, nil: zero, or one rank).
type neighbourMoments struct{ m, v []float32 }

// loadNeighbour reads the left neighbour's moments from the checkpoint
// the run resumed from.
func loadNeighbour(ctx context.Context, store *checkpoint.DirStore, man *checkpoint.Manifest, tr *train.Trainer, mem *memory) (neighbourMoments, error) {
	if mem == nil {
		return neighbourMoments{}, nil
	}
	_, lo, hi, ok := mem.store.NeighbourRange()
	if !ok {
		return neighbourMoments{}, nil
	}
	nb := neighbourMoments{make([]float32, hi-lo), make([]float32, hi-lo)}
	if err := store.LoadRange(ctx, man, lo, hi, checkpoint.State{AdamM: nb.m, AdamV: nb.v}, checkpoint.LoadOptions{SkipChecksums: true}); err != nil {
		return neighbourMoments{}, fmt.Errorf("load the neighbour's optimizer state of step %d: %w", man.Step, err)
	}
	return nb, nil
}

// restoreFromPeers loads the state of the assignment's memory decision:
// every old range's parameters, and the moments of this rank's new range
// and of its new left neighbour's, each from the worker that holds that
// old range (this worker's own frozen store when it is the holder).
func restoreFromPeers(ctx context.Context, o Options, a coordinator.Assignment, rank int, tr *train.Trainer, mem *memory, held *heldState, log *slog.Logger) (neighbourMoments, error) {
	if mem == nil {
		return neighbourMoments{}, fmt.Errorf("job %s: the assignment resumes from memory, which a DiLoCo job does not keep; it resumes from its last checkpoint", a.Job)
	}
	d := a.Memory
	if err := d.Validate(a.TotalSteps); err != nil {
		return neighbourMoments{}, &fatalError{fmt.Errorf("assignment's memory decision: %w", err)}
	}
	t0 := time.Now()
	total := tr.Layout().Total
	old, err := shard.NewLayout(total, len(d.Members))
	if err != nil {
		return neighbourMoments{}, err
	}
	f, err := peerstate.NewFetcher(o.Transport, a.Job, a.Generation, rank, ringWait(o))
	if err != nil {
		return neighbourMoments{}, err
	}
	defer f.Close()
	local := held.get(a.Job, d.From)
	var (
		mu       sync.Mutex
		errs     []error
		wg       sync.WaitGroup
		fetched  int
		localed  int
		fromPeer = map[string]bool{}
	)
	get := func(q int, part peerstate.Part, lo, hi int, dst []float32) {
		if lo >= hi {
			return
		}
		worker, hrank := d.Holder(q)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			isLocal := worker == o.ID && local != nil && local.Config().Rank == hrank
			if isLocal {
				err = local.Read(q, d.Step, part, lo, hi, dst)
			} else {
				err = f.Fetch(ctx, peerstate.Source{Generation: d.From, Rank: hrank, Range: q, Step: d.Step}, part, lo, hi, dst)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if isLocal {
				localed += 4 * (hi - lo)
			} else {
				fetched += 4 * (hi - lo)
				fromPeer[worker] = true
			}
		}()
	}
	// Moments of range [lo, hi) of the new layout, from the old ranges
	// that overlap it.
	moments := func(lo, hi int, m, v []float32) {
		for q := range old.World {
			qlo, qhi := old.Range(q)
			a, b := max(lo, qlo), min(hi, qhi)
			if a >= b {
				continue
			}
			get(q, peerstate.AdamM, a, b, m[a-lo:b-lo])
			get(q, peerstate.AdamV, a, b, v[a-lo:b-lo])
		}
	}
	params := tr.Model().Params()
	for q := range old.World {
		lo, hi := old.Range(q)
		get(q, peerstate.Params, lo, hi, params[lo:hi])
	}
	opt := tr.Optimizer()
	moments(opt.Lo, opt.Hi, opt.M, opt.V)
	var nb neighbourMoments
	if _, lo, hi, ok := mem.store.NeighbourRange(); ok {
		nb = neighbourMoments{make([]float32, hi-lo), make([]float32, hi-lo)}
		moments(lo, hi, nb.m, nb.v)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return neighbourMoments{}, fmt.Errorf("resume step %d from the memory of generation %d: %w", d.Step, d.From, err)
	}
	tr.SetStepsDone(d.Step)
	o.Metrics.resumed("memory")
	log.Info("resumed from peers' memory", "step", d.Step, "from_generation", d.From, "written_by_world", len(d.Members),
		"fetched_bytes", fetched, "local_bytes", localed, "peers", slices.Sorted(maps.Keys(fromPeer)), "took", time.Since(t0))
	return nb, nil
}

// watchForReplacement stops the run (freeze) as soon as the live workers
// are such that the leader will pick other members: a member left, or a
// worker joined that it will add. Waiting for the ring to time out would
// only delay the next generation, and leave the state less certain.
func watchForReplacement(ctx context.Context, o Options, a coordinator.Assignment, freeze func()) {
	if o.Etcd == nil {
		return
	}
	coordinator.WatchWorkers(ctx, o.Etcd, o.Cluster, o.Log, func(live map[string]coordinator.WorkerInfo) {
		ids := slices.Collect(maps.Keys(live))
		if !slices.Equal(coordinator.PickMembers(ids, a.Spec), a.Members) {
			freeze()
		}
	})
}

// reportMemory tells the coordinator what a stopped run holds, so that
// the next generation can resume from it. It reports whether the
// coordinator recorded it.
func reportMemory(ctx context.Context, o Options, a coordinator.Assignment, s *peerstate.Store, log *slog.Logger) bool {
	var ranges []coordinator.HeldRange
	for _, h := range s.Holdings() {
		ranges = append(ranges, coordinator.HeldRange{Rank: h.Rank, Steps: h.Steps})
	}
	if len(ranges) == 0 || o.Coordinator == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, ringWait(o))
	defer cancel()
	err := o.Coordinator.ReportMemory(ctx, a.Job, coordinator.MemoryReport{Generation: a.Generation, Worker: o.ID, WorkerStartedAt: o.startedAt, World: len(a.Members), Ranges: ranges})
	if err != nil {
		log.Warn("report memory state", "err", err)
		return false
	}
	log.Info("reported memory state", "ranges", ranges)
	return true
}

// heldState is the store of this worker's last stopped run, served to the
// next generation until that one has taken a step (by then every rank has
// restored) or the job ends.
type heldState struct {
	o     Options
	mu    sync.Mutex
	store *peerstate.Store
	stop  func() error
}

// keep serves s in place of what was held. A nil heldState (a run
// started outside Run) keeps nothing.
func (h *heldState) keep(s *peerstate.Store) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked()
	stop, err := peerstate.Serve(h.o.Transport, s, h.o.Log)
	if err != nil {
		h.o.Log.Warn("serve memory state", "err", err)
		return
	}
	h.store, h.stop = s, stop
}

// get is the held store of job's generation, or nil.
func (h *heldState) get(job string, generation uint64) *peerstate.Store {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.store == nil || h.store.Config().Job != job || h.store.Config().Generation != generation {
		return nil
	}
	return h.store
}

// release stops serving job's state from generations before gen.
func (h *heldState) release(job string, before uint64) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.store != nil && h.store.Config().Job == job && h.store.Config().Generation < before {
		h.dropLocked()
	}
}

// close stops serving whatever is held.
func (h *heldState) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked()
}

func (h *heldState) dropLocked() {
	if h.stop != nil {
		if err := h.stop(); err != nil {
			h.o.Log.Warn("stop serving memory state", "err", err)
		}
	}
	h.store, h.stop = nil, nil
}
