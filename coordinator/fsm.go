package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
	"github.com/modcoord/modcoord/checkpoint"
)

// FSM is the replicated job state. Apply is deterministic: it reads only
// the command (timestamps included) and the current state, and it answers
// an impossible transition with an error result instead of changing state.
type FSM struct {
	mu    sync.RWMutex
	state fsmState
	// changed is signalled (without blocking) after a command that can
	// change what the leader must schedule; progress reports do not.
	changed chan struct{}
}

// fsmState is everything the FSM holds; it is also the snapshot format.
type fsmState struct {
	Jobs map[string]*Job `json:"jobs"`
	// Order lists job ids in submission order (the FIFO queue).
	Order []string `json:"order"`
	// Seq numbers submissions; job ids are derived from it.
	Seq uint64 `json:"seq"`
	// Requests maps submission idempotency keys to job ids, so that a
	// client retrying a submission gets the same job back.
	Requests map[string]string `json:"requests"`
}

// NewFSM returns an empty state machine.
func NewFSM() *FSM {
	return &FSM{
		state:   fsmState{Jobs: map[string]*Job{}, Requests: map[string]string{}},
		changed: make(chan struct{}, 1),
	}
}

// Changed is signalled after commands that may need the leader to act.
func (f *FSM) Changed() <-chan struct{} { return f.changed }

// Apply implements raft.FSM. It returns the command's result, or an error.
func (f *FSM) Apply(l *raft.Log) any {
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("%w: decode command at index %d: %v", ErrInvalid, l.Index, err)
	}
	res, err := f.apply(c)
	if err != nil {
		return err
	}
	if c.Type != CmdProgress {
		select {
		case f.changed <- struct{}{}:
		default:
		}
	}
	return res
}

func (f *FSM) apply(c Command) (any, error) {
	if err := c.checkPayload(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.Type == CmdSubmit {
		res, err := f.state.submit(c)
		if err != nil {
			return nil, fmt.Errorf("apply submit: %w", err)
		}
		return res, nil
	}
	job, ok := f.state.Jobs[c.Job]
	if !ok {
		return nil, fmt.Errorf("apply %s: job %s: %w", c.Type, c.Job, ErrNotFound)
	}
	var res any
	var err error
	switch c.Type {
	case CmdStartGeneration:
		err = f.state.startGeneration(job, c)
	case CmdProgress:
		err = job.progress(c)
	case CmdReportShard:
		res, err = job.reportShard(c)
	case CmdCommitCheckpoint:
		res, err = job.commitCheckpoint(c)
	case CmdComplete:
		err = job.complete(c)
	case CmdCancel:
		err = job.cancel(c)
	case CmdFail:
		err = job.fail(c)
	case CmdMemoryReport:
		err = job.memoryReport(c)
	}
	if err != nil {
		return nil, fmt.Errorf("apply %s for job %s: %w", c.Type, c.Job, err)
	}
	return res, nil
}

func (s *fsmState) submit(c Command) (SubmitResult, error) {
	sub := c.Submit
	if sub.RequestID != "" {
		if id, ok := s.Requests[sub.RequestID]; ok {
			return s.Jobs[id].submitResult(), nil
		}
	}
	spec, plan := sub.Spec, sub.Plan
	// The leader validated the whole spec; these are the invariants the
	// rest of the FSM relies on.
	switch {
	case plan.Steps < 1 || plan.FLOPsPerStep <= 0:
		return SubmitResult{}, fmt.Errorf("%w: plan of %d steps at %g FLOPs/step", ErrInvalid, plan.Steps, plan.FLOPsPerStep)
	case spec.MinWorkers < 1 || spec.MaxWorkers < spec.MinWorkers || spec.Batch < 1 || spec.Batch%spec.MinWorkers != 0:
		return SubmitResult{}, fmt.Errorf("%w: workers %d..%d for batch %d", ErrInvalid, spec.MinWorkers, spec.MaxWorkers, spec.Batch)
	case spec.CheckpointEvery < 1 || spec.KeepCheckpoints < 1:
		return SubmitResult{}, fmt.Errorf("%w: checkpoint_every %d, keep_checkpoints %d", ErrInvalid, spec.CheckpointEvery, spec.KeepCheckpoints)
	}
	s.Seq++
	id := fmt.Sprintf("job-%06d", s.Seq)
	s.Jobs[id] = &Job{
		ID:          id,
		Spec:        spec,
		Status:      StatusQueued,
		Reason:      "queued",
		SubmittedAt: c.At,
		Ledger: Ledger{
			BudgetFLOPs:  spec.BudgetFLOPs,
			FLOPsPerStep: plan.FLOPsPerStep,
			TotalSteps:   plan.Steps,
			OuterFLOPs:   plan.OuterFLOPs,
			InnerSteps:   innerSteps(spec),
			WarmupSteps:  warmupSteps(spec),
		},
		RequestID: sub.RequestID,
	}
	s.Order = append(s.Order, id)
	if sub.RequestID != "" {
		s.Requests[sub.RequestID] = id
	}
	return s.Jobs[id].submitResult(), nil
}

func (j *Job) submitResult() SubmitResult {
	return SubmitResult{ID: j.ID, Steps: j.Ledger.TotalSteps, FLOPsPerStep: j.Ledger.FLOPsPerStep, BudgetFLOPs: j.Ledger.BudgetFLOPs}
}

// startGeneration gives a job a new set of workers, or none (waiting).
// One job runs at a time. A job may start (get members) only when no other
// job runs and no job submitted before it could start with the live
// workers: the queue is FIFO among the jobs that fit, so a job waiting
// for more workers than are alive does not hold up one behind it that
// fits. A running job is not preempted when an earlier one becomes able
// to start; the earlier one goes first once the running one ends.
// A generation without members (waiting) may be given to any job that has
// not ended: it records why the job cannot run.
func (s *fsmState) startGeneration(j *Job, c Command) error {
	g := c.StartGeneration
	if j.Status.Terminal() {
		return fmt.Errorf("%w: job is %s", ErrConflict, j.Status)
	}
	if len(g.Members) > 0 {
		if err := s.mayStart(j, g.Live); err != nil {
			return err
		}
	}
	if g.Generation != j.Generation+1 {
		return fmt.Errorf("%w: generation %d does not follow the current %d", ErrStale, g.Generation, j.Generation)
	}
	n := len(g.Members)
	switch {
	case n > j.Spec.MaxWorkers:
		return fmt.Errorf("%w: %d members exceed max_workers %d", ErrInvalid, n, j.Spec.MaxWorkers)
	case n > 0 && n < j.Spec.MinWorkers:
		return fmt.Errorf("%w: %d members are fewer than min_workers %d; start with none to wait", ErrInvalid, n, j.Spec.MinWorkers)
	case n > 0 && j.Spec.Batch%n != 0:
		return fmt.Errorf("%w: batch %d does not split over %d members", ErrInvalid, j.Spec.Batch, n)
	case g.Live < n:
		return fmt.Errorf("%w: %d members but only %d live workers", ErrInvalid, n, g.Live)
	}
	if g.Memory != nil {
		if err := j.checkMemoryResume(g.Memory, n); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, m := range g.Members {
		if m == "" || seen[m] {
			return fmt.Errorf("%w: member %q is empty or repeated", ErrInvalid, m)
		}
		seen[m] = true
	}

	// Work since the last committed checkpoint is lost, unless the
	// workers' memory holds a newer step: the next generation resumes
	// from the one or the other.
	var resume int64
	if j.Checkpoint != nil {
		resume = j.Checkpoint.Step
	}
	j.ResumeMemory = g.Memory.Clone()
	if g.Memory != nil {
		resume = g.Memory.Step
	}
	// A running generation's workers keep their state while the job waits
	// for workers (fewer alive than min_workers): the generation that
	// ends the wait may resume from it. Any generation with members
	// consumes the source, from memory or not.
	switch {
	case n == 0 && j.Status == StatusRunning && !j.Spec.Sync.IsDiLoCo():
		j.MemorySource = &MemorySource{Generation: j.Generation, Members: slices.Clone(j.Members), StartStep: j.StartStep, FormedAt: j.GenerationAt}
	case n == 0 && j.Status == StatusWaiting:
		// waiting again: the source, and its reports, stay
	default:
		j.MemorySource = nil
	}
	if j.MemorySource == nil {
		j.Memory = nil
	}
	// A committed checkpoint (or a memory decision) proves that every rank
	// ran its steps, but rank 0's progress reports may not have caught up
	// with it (they are coalesced, and lost when rank 0 dies). Those steps were spent: not
	// counting them made flops_spent fall below flops_used (a negative
	// redone count) after a kill of rank 0 just past a commit.
	if resume > j.Ledger.StepsDone {
		j.Ledger.FLOPsSpent += j.Ledger.FLOPsAt(resume) - j.Ledger.FLOPsAt(j.Ledger.StepsDone)
	}
	j.Generation = g.Generation
	j.GenerationAt = c.At
	j.Live = g.Live
	j.StartStep = resume
	j.ResumeFrom = j.Checkpoint.Clone()
	// While a memory source waits, the progress it reached stands: the
	// generation that ends the wait settles it (from memory, or back to
	// the checkpoint, when the steps since count as redone).
	if j.MemorySource == nil || resume > j.Ledger.StepsDone {
		j.Ledger.StepsDone = resume
		j.Ledger.FLOPsUsed = j.Ledger.FLOPsAt(resume)
	}
	j.Pending = nil
	if n == 0 {
		j.Status = StatusWaiting
		j.Members = nil
		j.Reason = s.waitReason(j, g.Live)
		return nil
	}
	j.Status = StatusRunning
	j.Members = slices.Clone(g.Members)
	j.Reason = fmt.Sprintf("running: generation %d, %d workers, from step %d", g.Generation, n, resume)
	if g.Memory != nil {
		j.Reason += " (from memory)"
	}
	if j.StartedAt.IsZero() {
		j.StartedAt = c.At
	}
	return nil
}

// mayStart refuses to give j members while another job runs or while a
// job submitted before j could start with live workers.
func (s *fsmState) mayStart(j *Job, live int) error {
	before := true
	for _, id := range s.Order {
		other := s.Jobs[id]
		if id == j.ID {
			before = false
			continue
		}
		switch {
		case other.Status == StatusRunning:
			return fmt.Errorf("%w: job %s is running; one job runs at a time", ErrConflict, id)
		case before && !other.Status.Terminal() && other.Spec.MinWorkers <= live:
			return fmt.Errorf("%w: job %s comes first and can start with %d live workers", ErrConflict, id, live)
		}
	}
	return nil
}

// waitReason says why j gets no workers with live of them alive.
func (s *fsmState) waitReason(j *Job, live int) string {
	if live < j.Spec.MinWorkers {
		return fmt.Sprintf("waiting: %d of %d required workers alive", live, j.Spec.MinWorkers)
	}
	for _, id := range s.Order {
		if other := s.Jobs[id]; id != j.ID && other.Status == StatusRunning {
			return fmt.Sprintf("waiting: job %s holds the workers (%d live)", id, live)
		}
	}
	return fmt.Sprintf("waiting: %d live worker(s)", live)
}

// checkCurrent refuses commands for a job that is not running or from a
// generation that is not the current one.
func (j *Job) checkCurrent(gen uint64) error {
	if j.Status != StatusRunning {
		return fmt.Errorf("%w: job is %s", ErrConflict, j.Status)
	}
	if gen != j.Generation {
		return fmt.Errorf("%w: generation %d is not the current %d", ErrStale, gen, j.Generation)
	}
	return nil
}

func (j *Job) progress(c Command) error {
	p := c.Progress
	if err := j.checkCurrent(p.Generation); err != nil {
		return err
	}
	// Rank 0 reports after each step it ran, so an honest report is for a
	// step this generation ran: after the one it started from, not past
	// the job's last, and never behind the last report (steps only grow).
	switch {
	case p.Step <= j.StartStep:
		return fmt.Errorf("%w: step %d is not after generation %d's start step %d", ErrStale, p.Step, j.Generation, j.StartStep)
	case p.Step < j.Ledger.StepsDone:
		return fmt.Errorf("%w: step %d is behind steps done %d", ErrStale, p.Step, j.Ledger.StepsDone)
	case p.Step > j.Ledger.TotalSteps:
		return fmt.Errorf("%w: step %d is past the job's %d steps", ErrInvalid, p.Step, j.Ledger.TotalSteps)
	case !finite(p.Loss) || (p.ValLoss != nil && !finite(*p.ValLoss)) || !finite(p.WallS):
		return fmt.Errorf("%w: non-finite loss or wall time in the report for step %d", ErrInvalid, p.Step)
	case p.Tokens < 0 || p.WallS < 0:
		return fmt.Errorf("%w: negative tokens %d or wall_s %v", ErrInvalid, p.Tokens, p.WallS)
	case !slices.Contains(j.Members, p.Worker):
		return fmt.Errorf("%w: worker %q is not a member of generation %d", ErrStale, p.Worker, j.Generation)
	}
	if n := len(j.Recent); n > 0 && j.Recent[n-1].Generation == p.Generation && j.Recent[n-1].Step == p.Step {
		return nil // a retried report
	}
	j.Ledger.FLOPsSpent += j.Ledger.FLOPsAt(p.Step) - j.Ledger.FLOPsAt(j.Ledger.StepsDone)
	j.Ledger.StepsDone = p.Step
	j.Ledger.FLOPsUsed = j.Ledger.FLOPsAt(p.Step)
	j.Recent = append(j.Recent, ProgressPoint{ProgressReport: *p, At: c.At})
	if p.ValLoss != nil {
		j.Val = &ValPoint{Step: p.Step, Loss: *p.ValLoss}
		if p.ValStep > 0 && p.ValStep <= p.Step {
			j.Val.Step = p.ValStep
		}
	}
	if len(j.Recent) > RecentProgress {
		j.Recent = slices.Clone(j.Recent[len(j.Recent)-RecentProgress:])
	}
	return nil
}

// reportShard records one rank's shard of the checkpoint at a step: the
// first phase of the two-phase commit.
func (j *Job) reportShard(c Command) (ShardResult, error) {
	r := c.Shard
	if err := j.checkCurrent(r.Generation); err != nil {
		return ShardResult{}, err
	}
	var committed int64
	if j.Checkpoint != nil {
		committed = j.Checkpoint.Step
	}
	sh := r.Shard
	switch {
	case r.Step <= committed || (r.Step <= j.StartStep && !(j.ResumeMemory != nil && r.Step == j.StartStep)):
		// A generation resumed from memory may checkpoint the step it
		// started at: the stopped one may not have committed it (the
		// job's last step must be).
		return ShardResult{}, fmt.Errorf("%w: step %d is not after the last checkpoint (step %d)", ErrStale, r.Step, max(committed, j.StartStep))
	case r.Step > j.Ledger.TotalSteps:
		return ShardResult{}, fmt.Errorf("%w: step %d is past the job's %d steps", ErrInvalid, r.Step, j.Ledger.TotalSteps)
	case r.Step%j.Spec.CheckpointEvery != 0 && r.Step != j.Ledger.TotalSteps:
		return ShardResult{}, fmt.Errorf("%w: step %d is not a checkpoint step (every %d, and the last step %d)", ErrInvalid, r.Step, j.Spec.CheckpointEvery, j.Ledger.TotalSteps)
	case j.Pending != nil && r.Step < j.Pending.Step:
		return ShardResult{}, fmt.Errorf("%w: step %d is not the current checkpoint step %d", ErrStale, r.Step, j.Pending.Step)
	case sh.Rank < 0 || sh.Rank >= len(j.Members):
		return ShardResult{}, fmt.Errorf("%w: rank %d is outside 0..%d", ErrInvalid, sh.Rank, len(j.Members)-1)
	case len(r.Config) == 0 || len(r.Config) > checkpoint.MaxConfigBytes || !json.Valid(r.Config):
		return ShardResult{}, fmt.Errorf("%w: checkpoint config of %d bytes must be JSON of at most %d bytes", ErrInvalid, len(r.Config), checkpoint.MaxConfigBytes)
	}
	if err := sh.Validate(); err != nil {
		return ShardResult{}, fmt.Errorf("%w: shard: %v", ErrInvalid, err)
	}
	// A report for a later step abandons an incomplete earlier round:
	// workers run in lockstep, so that round can no longer complete.
	if j.Pending == nil || r.Step > j.Pending.Step {
		j.Pending = &checkpoint.Manifest{Version: checkpoint.ManifestVersion, Job: j.ID, Step: r.Step,
			Generation: j.Generation, World: len(j.Members), Config: bytes.Clone(r.Config)}
	} else if !bytes.Equal(j.Pending.Config, r.Config) {
		return ShardResult{}, fmt.Errorf("%w: rank %d's checkpoint config differs from the other ranks' for step %d", ErrInvalid, sh.Rank, r.Step)
	}
	i, found := slices.BinarySearchFunc(j.Pending.Shards, sh.Rank, func(s checkpoint.ShardInfo, rank int) int { return s.Rank - rank })
	if found {
		j.Pending.Shards[i] = sh // a rewrite replaces the earlier report
	} else {
		j.Pending.Shards = slices.Insert(j.Pending.Shards, i, sh)
	}
	return ShardResult{Complete: len(j.Pending.Shards) == j.Pending.World}, nil
}

// commitCheckpoint is the second phase: once every rank has reported, the
// pending manifest becomes the committed one, and retention drops the
// oldest beyond keep_checkpoints.
func (j *Job) commitCheckpoint(c Command) (CommitResult, error) {
	cc := c.Commit
	if j.Checkpoint != nil && j.Checkpoint.Step == cc.Step && j.Checkpoint.Generation == cc.Generation {
		return CommitResult{Manifest: *j.Checkpoint.Clone(), Retained: cloneManifests(j.Retained), Dropped: cloneManifests(j.Dropped)}, nil // already committed
	}
	if err := j.checkCurrent(cc.Generation); err != nil {
		return CommitResult{}, err
	}
	p := j.Pending
	switch {
	case p == nil || p.Step != cc.Step:
		return CommitResult{}, fmt.Errorf("%w: no checkpoint pending for step %d", ErrStale, cc.Step)
	case len(p.Shards) != p.World:
		return CommitResult{}, fmt.Errorf("%w: %d of %d shards reported for step %d", ErrConflict, len(p.Shards), p.World, cc.Step)
	}
	next := 0
	for r, sh := range p.Shards {
		if sh.Rank != r || sh.Lo != next {
			return CommitResult{}, fmt.Errorf("%w: shard of rank %d covers [%d, %d), expected to start at %d", ErrInvalid, sh.Rank, sh.Lo, sh.Hi, next)
		}
		next = sh.Hi
	}
	if j.Checkpoint != nil && j.Checkpoint.Total != next {
		return CommitResult{}, fmt.Errorf("%w: shards cover %d parameters, the last checkpoint %d", ErrInvalid, next, j.Checkpoint.Total)
	}
	p.Total = next
	if err := p.Validate(); err != nil {
		return CommitResult{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	j.Pending = nil
	j.Checkpoint = p
	j.Retained = append(j.Retained, *p.Clone())
	j.Dropped = nil
	if extra := len(j.Retained) - j.Spec.KeepCheckpoints; extra > 0 {
		j.Dropped = j.Retained[:extra]
		j.Retained = slices.Clone(j.Retained[extra:])
	}
	return CommitResult{Manifest: *p.Clone(), Retained: cloneManifests(j.Retained), Dropped: cloneManifests(j.Dropped)}, nil
}

func (j *Job) complete(c Command) error {
	r := c.Complete
	if j.Status == StatusCompleted && r.Step == j.Ledger.TotalSteps {
		return nil // a retried report
	}
	if err := j.checkCurrent(r.Generation); err != nil {
		return err
	}
	if r.Step != j.Ledger.TotalSteps {
		return fmt.Errorf("%w: step %d is not the job's last step %d", ErrInvalid, r.Step, j.Ledger.TotalSteps)
	}
	// A job is complete once its final weights are safe: the checkpoint
	// of its last step is committed. Without it "completed" would name
	// weights nobody can load.
	if j.Checkpoint == nil || j.Checkpoint.Step != j.Ledger.TotalSteps {
		have := "no committed checkpoint"
		if j.Checkpoint != nil {
			have = fmt.Sprintf("the last committed checkpoint is step %d", j.Checkpoint.Step)
		}
		return fmt.Errorf("%w: cannot complete before the checkpoint of the last step %d is committed (%s)", ErrConflict, j.Ledger.TotalSteps, have)
	}
	j.Ledger.FLOPsSpent += j.Ledger.FLOPsAt(r.Step) - j.Ledger.FLOPsAt(j.Ledger.StepsDone)
	j.Ledger.StepsDone = r.Step
	j.Ledger.FLOPsUsed = j.Ledger.FLOPsAt(r.Step)
	j.Status = StatusCompleted
	j.Reason = fmt.Sprintf("completed: %d steps, %.4g FLOPs", r.Step, j.Ledger.FLOPsUsed)
	j.EndedAt = c.At
	j.Pending = nil
	return nil
}

func (j *Job) cancel(c Command) error {
	switch {
	case j.Status == StatusCanceled:
		return nil // canceling twice is not an error
	case j.Status.Terminal():
		return fmt.Errorf("%w: job is already %s", ErrConflict, j.Status)
	}
	j.Status = StatusCanceled
	j.Reason = "canceled"
	if c.Cancel.Reason != "" {
		j.Reason = "canceled: " + truncate(c.Cancel.Reason, 500)
	}
	j.EndedAt = c.At
	j.Pending = nil
	return nil
}

func (j *Job) fail(c Command) error {
	r := c.Fail
	switch {
	case j.Status.Terminal():
		return fmt.Errorf("%w: job is already %s", ErrConflict, j.Status)
	case r.Generation != 0 && r.Generation != j.Generation:
		return fmt.Errorf("%w: generation %d is not the current %d", ErrStale, r.Generation, j.Generation)
	case r.Reason == "":
		return fmt.Errorf("%w: a failure needs a reason", ErrInvalid)
	}
	j.Status = StatusFailed
	j.Reason = "failed: " + truncate(r.Reason, 500)
	j.EndedAt = c.At
	j.Pending = nil
	return nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// Job returns a copy of one job.
func (f *FSM) Job(id string) (Job, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	j, ok := f.state.Jobs[id]
	if !ok {
		return Job{}, false
	}
	return f.state.view(j), true
}

// Jobs returns copies of all jobs in submission order.
func (f *FSM) Jobs() []Job {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Job, 0, len(f.state.Order))
	for _, id := range f.state.Order {
		out = append(out, f.state.view(f.state.Jobs[id]))
	}
	return out
}

// NextJob returns the job that should hold the workers when live of them
// are alive: the running one; else the first in submission order that
// can start with live workers; else the first not ended (which waits).
// The rule is startGeneration's.
func (f *FSM) NextJob(live int) (Job, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var first, fits *Job
	for _, id := range f.state.Order {
		j := f.state.Jobs[id]
		switch {
		case j.Status == StatusRunning:
			return f.state.view(j), true
		case j.Status.Terminal():
		case first == nil:
			first = j
			fallthrough
		default:
			if fits == nil && j.Spec.MinWorkers <= live {
				fits = j
			}
		}
	}
	switch {
	case fits != nil:
		return f.state.view(fits), true
	case first != nil:
		return f.state.view(first), true
	}
	return Job{}, false
}

// Blocked returns the jobs, other than the one NextJob(live) names, that
// cannot start with live workers (min_workers above it) and do not yet say
// so for this number of live workers: the leader gives each a generation
// without members, so that its status explains why it waits.
func (f *FSM) Blocked(live int, next string) []Job {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Job
	for _, id := range f.state.Order {
		j := f.state.Jobs[id]
		if id == next || j.Status.Terminal() || j.Status == StatusRunning || j.Spec.MinWorkers <= live {
			continue
		}
		if j.Status == StatusWaiting && j.Live == live {
			continue
		}
		out = append(out, f.state.view(j))
	}
	return out
}

// view copies a job, explaining a queued job's place in the queue.
func (s *fsmState) view(j *Job) Job {
	v := j.clone()
	if j.Status == StatusQueued {
		ahead := 0
		for _, id := range s.Order {
			if id == j.ID {
				break
			}
			if !s.Jobs[id].Status.Terminal() {
				ahead++
			}
		}
		if ahead > 0 {
			v.Reason = fmt.Sprintf("queued: %d job(s) ahead", ahead)
		}
	}
	return v
}

// Snapshot implements raft.FSM. The state is encoded now, under the lock,
// so Persist can run while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(f.state)
	if err != nil {
		return nil, fmt.Errorf("snapshot fsm: %w", err)
	}
	return fsmSnapshot(b), nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s fsmState
	if err := json.NewDecoder(rc).Decode(&s); err != nil {
		return fmt.Errorf("restore fsm: %w", err)
	}
	if s.Jobs == nil {
		s.Jobs = map[string]*Job{}
	}
	if s.Requests == nil {
		s.Requests = map[string]string{}
	}
	if err := s.check(); err != nil {
		return fmt.Errorf("restore fsm: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
	return nil
}

type fsmSnapshot []byte

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist fsm snapshot: %w", err)
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() {}
