package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// In-memory recovery. Every rank of a generation keeps its own range of
// the parameters and AdamW moments, and a replica of its left ring
// neighbour's range, each at the last two steps it completed (package
// peerstate). When a generation stops, its workers report what they hold
// (MemoryReport); the leader waits a bounded time for the reports of the
// members still alive and, when every range of the old layout is held by
// some live worker at a common step not older than the last committed
// checkpoint, the next generation resumes from their memory at the newest
// such step (MemoryResume) instead of from disk.

// MemorySource is a stopped running generation whose workers may still
// hold the job's state in memory.
type MemorySource struct {
	Generation uint64   `json:"generation"`
	Members    []string `json:"members"`
	StartStep  int64    `json:"start_step"`
	// FormedAt is when the generation formed: a member whose process
	// started later cannot hold its state.
	FormedAt time.Time `json:"formed_at,omitzero"`
}

// memorySource is the generation whose workers' memory the job's next
// generation may resume from: the current one while the job runs, the
// last running one while it waits for workers; ok is false otherwise.
func (j *Job) memorySource() (src MemorySource, ok bool) {
	switch {
	case j.Status == StatusRunning:
		return MemorySource{Generation: j.Generation, Members: j.Members, StartStep: j.StartStep, FormedAt: j.GenerationAt}, true
	case j.Status == StatusWaiting && j.MemorySource != nil:
		return *j.MemorySource, true
	}
	return MemorySource{}, false
}

// MaxMemoryWorld bounds the world size a memory report or decision may
// name, before anything is allocated for it.
const MaxMemoryWorld = 4096

// MemoryReport is a worker's report that its run of a generation stopped
// and which ranges of that generation's layout it holds in memory, at
// which steps; the body of POST /v1/jobs/{id}/memory.
type MemoryReport struct {
	Generation uint64 `json:"generation"`
	Worker     string `json:"worker"`
	// WorkerStartedAt is the reporting process's registered start time:
	// a worker restarted under the same id holds nothing, and the leader
	// ignores the reports of its earlier process (zero: not known).
	WorkerStartedAt time.Time `json:"worker_started_at,omitzero"`
	// World is the generation's size, whose layout the ranks refer to.
	World  int         `json:"world"`
	Ranges []HeldRange `json:"ranges"`
}

// HeldRange is one range of a generation's layout (the rank that owns it)
// and the steps a worker holds it at: its own rank, and its left
// neighbour's replica, each at most at the last two completed steps.
type HeldRange struct {
	Rank  int     `json:"rank"`
	Steps []int64 `json:"steps"`
}

// MemoryResume is the leader's decision that a generation resumes from
// the memory of generation From at Step, recorded by the raft log in the
// start-generation command.
type MemoryResume struct {
	From uint64 `json:"from_generation"`
	Step int64  `json:"step"`
	// Members are generation From's workers in rank order: the layout the
	// ranges refer to is that of len(Members) ranks.
	Members []string `json:"members"`
	// Holders[q] is the rank, in generation From, of the worker that
	// serves range q at Step: q itself (the owner) or q+1 (its replica).
	Holders []int `json:"holders"`
}

// Validate checks what a worker relies on in a decision read from an
// assignment: a world within bounds, one holder per range, each the
// range's owner or its right neighbour, and a step of the job.
func (m *MemoryResume) Validate(totalSteps int64) error {
	w := len(m.Members)
	switch {
	case w < 1 || w > MaxMemoryWorld:
		return fmt.Errorf("%d members; 1..%d allowed", w, MaxMemoryWorld)
	case len(m.Holders) != w:
		return fmt.Errorf("%d holders for %d ranges", len(m.Holders), w)
	case m.Step < 1 || m.Step > totalSteps:
		return fmt.Errorf("step %d is outside the job's 1..%d", m.Step, totalSteps)
	}
	for q, h := range m.Holders {
		if h != q && h != (q+1)%w {
			return fmt.Errorf("range %d held by rank %d; only its owner or its right neighbour holds it", q, h)
		}
	}
	return nil
}

// Holder is the worker that serves range q.
func (m *MemoryResume) Holder(q int) (worker string, rank int) {
	r := m.Holders[q]
	return m.Members[r], r
}

// Clone is a deep copy (nil stays nil).
func (m *MemoryResume) Clone() *MemoryResume {
	if m == nil {
		return nil
	}
	c := *m
	c.Members = slices.Clone(m.Members)
	c.Holders = slices.Clone(m.Holders)
	return &c
}

func (r MemoryReport) clone() MemoryReport {
	c := r
	c.Ranges = make([]HeldRange, len(r.Ranges))
	for i, h := range r.Ranges {
		c.Ranges[i] = HeldRange{Rank: h.Rank, Steps: slices.Clone(h.Steps)}
	}
	return c
}

// holds reports whether r holds range q at step.
func (r MemoryReport) holds(q int, step int64) bool {
	for _, h := range r.Ranges {
		if h.Rank == q && slices.Contains(h.Steps, step) {
			return true
		}
	}
	return false
}

// memoryReport records one worker's holdings for the memory source: the
// current generation, or while the job waits, the last running one.
// Only what the protocol can produce is accepted: the worker is a member,
// the ranges are its own rank and its left neighbour's, each at one or two
// steps this generation can have reached.
func (j *Job) memoryReport(c Command) error {
	r := c.Memory
	src, ok := j.memorySource()
	switch {
	case !ok:
		return fmt.Errorf("%w: job is %s, with no generation whose memory it could resume from", ErrConflict, j.Status)
	case r.Generation != src.Generation:
		return fmt.Errorf("%w: generation %d is not %d, the one the next generation may resume from", ErrStale, r.Generation, src.Generation)
	}
	own := slices.Index(src.Members, r.Worker)
	w := len(src.Members)
	switch {
	case own < 0:
		return fmt.Errorf("%w: worker %q is not a member of generation %d", ErrStale, r.Worker, src.Generation)
	case r.World != w:
		return fmt.Errorf("%w: world %d, generation %d has %d members", ErrInvalid, r.World, src.Generation, w)
	case len(r.Ranges) < 1 || len(r.Ranges) > 2:
		return fmt.Errorf("%w: %d ranges; a worker holds its own and at most its neighbour's", ErrInvalid, len(r.Ranges))
	}
	left := (own - 1 + w) % w
	for i, h := range r.Ranges {
		switch {
		case h.Rank != own && (h.Rank != left || w == 1):
			return fmt.Errorf("%w: worker of rank %d reports range %d; it holds only %d and %d", ErrInvalid, own, h.Rank, own, left)
		case i == 1 && h.Rank == r.Ranges[0].Rank:
			return fmt.Errorf("%w: range %d reported twice", ErrInvalid, h.Rank)
		case len(h.Steps) < 1 || len(h.Steps) > 2:
			return fmt.Errorf("%w: range %d at %d steps; a worker keeps one or two", ErrInvalid, h.Rank, len(h.Steps))
		case len(h.Steps) == 2 && h.Steps[0] == h.Steps[1]:
			return fmt.Errorf("%w: range %d: step %d reported twice", ErrInvalid, h.Rank, h.Steps[0])
		}
		for _, s := range h.Steps {
			if s < src.StartStep || s > j.Ledger.TotalSteps {
				return fmt.Errorf("%w: range %d at step %d, outside generation %d's steps %d..%d", ErrInvalid, h.Rank, s, src.Generation, src.StartStep, j.Ledger.TotalSteps)
			}
		}
	}
	i, found := slices.BinarySearchFunc(j.Memory, r.Worker, func(m MemoryReport, id string) int {
		switch {
		case m.Worker < id:
			return -1
		case m.Worker > id:
			return 1
		}
		return 0
	})
	if found {
		j.Memory[i] = r.clone() // a retried or later report replaces the earlier
	} else {
		j.Memory = slices.Insert(j.Memory, i, r.clone())
	}
	return nil
}

// checkMemoryResume checks a start-generation command's memory decision
// against the reports recorded for the job's memory source.
func (j *Job) checkMemoryResume(m *MemoryResume, members int) error {
	var committed int64
	if j.Checkpoint != nil {
		committed = j.Checkpoint.Step
	}
	src, ok := j.memorySource()
	switch {
	case members == 0:
		return fmt.Errorf("%w: a waiting generation resumes nothing from memory", ErrInvalid)
	case !ok || m.From != src.Generation:
		return fmt.Errorf("%w: memory of generation %d, the job is %s in generation %d", ErrStale, m.From, j.Status, j.Generation)
	case !slices.Equal(m.Members, src.Members):
		return fmt.Errorf("%w: memory decision names members %v, generation %d has %v", ErrInvalid, m.Members, src.Generation, src.Members)
	}
	// The checks a worker makes of the decision (world bound, one holder
	// per range, owner or right neighbour), then the leader's own.
	if err := m.Validate(j.Ledger.TotalSteps); err != nil {
		return fmt.Errorf("%w: memory decision: %w", ErrInvalid, err)
	}
	if m.Step < committed || m.Step < src.StartStep {
		return fmt.Errorf("%w: memory step %d is outside %d..%d (after the last checkpoint and the generation's start)", ErrInvalid, m.Step, max(1, committed, src.StartStep), j.Ledger.TotalSteps)
	}
	for q, h := range m.Holders {
		worker := m.Members[h]
		i := slices.IndexFunc(j.Memory, func(r MemoryReport) bool { return r.Worker == worker })
		if i < 0 || !j.Memory[i].holds(q, m.Step) {
			return fmt.Errorf("%w: worker %s did not report range %d at step %d", ErrInvalid, worker, q, m.Step)
		}
	}
	return nil
}

// decideMemory picks the newest step at which every range of the job's
// memory source is held by a live worker that reported it, not older
// than the last committed checkpoint; nil when there is none (the state is
// gone: the next generation resumes from the checkpoint). The owner of a
// range is preferred to its replica.
func decideMemory(j Job, live map[string]bool) *MemoryResume {
	src, ok := j.memorySource()
	w := len(src.Members)
	if !ok || w == 0 || len(j.Memory) == 0 {
		return nil
	}
	reports := map[string]MemoryReport{}
	var steps []int64
	for _, r := range j.Memory {
		if live[r.Worker] && r.World == w {
			reports[r.Worker] = r
			for _, h := range r.Ranges {
				steps = append(steps, h.Steps...)
			}
		}
	}
	slices.Sort(steps)
	steps = slices.Compact(steps)
	var floor int64 = 1
	if j.Checkpoint != nil {
		floor = max(floor, j.Checkpoint.Step)
	}
	floor = max(floor, src.StartStep)
	for i := len(steps) - 1; i >= 0 && steps[i] >= floor; i-- {
		s := steps[i]
		holders := make([]int, w)
		ok := true
		for q := 0; q < w && ok; q++ {
			switch {
			case reports[src.Members[q]].holds(q, s):
				holders[q] = q
			case reports[src.Members[(q+1)%w]].holds(q, s):
				holders[q] = (q + 1) % w
			default:
				ok = false
			}
		}
		if ok {
			return &MemoryResume{From: src.Generation, Step: s, Members: slices.Clone(src.Members), Holders: holders}
		}
	}
	return nil
}

// memoryWait tracks, per job generation, since when the leader has been
// waiting for the memory reports of a stopped generation's live members.
type memoryWait struct {
	generation uint64
	since      time.Time
}

// awaitReports reports whether the leader should hold off the next
// generation of job: some live member of the current generation has not
// reported its memory yet, and the wait has not run out. It arms wake for
// the end of the wait.
func (c *controller) awaitReports(job Job, live map[string]WorkerInfo) bool {
	// DiLoCo's inner steps are local, so no rank can replay a peer's
	// range: its workers keep no memory to report (they resume from the
	// last outer-boundary checkpoint), and waiting for reports is waste.
	src, ok := job.memorySource()
	if !ok || c.memoryWait <= 0 || job.Spec.Sync.IsDiLoCo() {
		return false
	}
	missing := 0
	for _, m := range src.Members {
		info, ok := live[m]
		// A member restarted since the generation formed holds nothing
		// and will not report (its clock against the leader's: a skew
		// only makes the leader wait, or decide without the report).
		restarted := !src.FormedAt.IsZero() && info.StartedAt.After(src.FormedAt)
		if ok && !restarted && !slices.ContainsFunc(job.Memory, func(r MemoryReport) bool { return r.Worker == m }) {
			missing++
		}
	}
	if missing == 0 {
		return false
	}
	w, ok := c.memWaits[job.ID]
	if !ok || w.generation != job.Generation {
		w = memoryWait{generation: job.Generation, since: time.Now()}
		c.memWaits[job.ID] = w
	}
	left := c.memoryWait - time.Since(w.since)
	if left <= 0 {
		c.log.Warn("memory reports missing; deciding without them", "job", job.ID, "generation", job.Generation, "missing", missing)
		return false
	}
	c.wake.Reset(left)
	return true
}

// holdersAlive are the live workers whose memory reports, if any, come
// from the process alive now: a report made before its worker restarted
// under the same id names state that is gone.
func holdersAlive(job Job, live map[string]WorkerInfo) map[string]bool {
	alive := make(map[string]bool, len(live))
	for id := range live {
		alive[id] = true
	}
	for _, r := range job.Memory {
		if info, ok := live[r.Worker]; ok && !r.WorkerStartedAt.IsZero() && !r.WorkerStartedAt.Equal(info.StartedAt) {
			alive[r.Worker] = false
		}
	}
	return alive
}

// PickMembers is the leader's choice of a generation's members among the
// live workers (sorted by id, as many as max_workers and the batch allow).
// A worker computes it too, to notice that its generation is about to be
// replaced and stop it at once, keeping its state for the next one.
func PickMembers(live []string, spec JobSpec) []string { return pickMembers(live, spec) }

// WatchWorkers follows the cluster's live worker set until ctx is done,
// calling changed with a fresh copy after every change.
func WatchWorkers(ctx context.Context, cli *clientv3.Client, cluster string, log *slog.Logger, changed func(map[string]WorkerInfo)) {
	watchWorkers(ctx, cli, cluster, log, changed)
}
