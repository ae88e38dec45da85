package coordinator

import (
	"errors"
	"slices"
	"time"

	"github.com/modcoord/modcoord/checkpoint"
)

// JobStatus is where a job is in its life.
type JobStatus string

const (
	// StatusQueued: submitted, behind another job.
	StatusQueued JobStatus = "queued"
	// StatusWaiting: the active job, but fewer than min_workers are alive.
	StatusWaiting JobStatus = "waiting"
	// StatusRunning: a generation of workers is training it.
	StatusRunning JobStatus = "running"
	// StatusCompleted: every step of the budget ran.
	StatusCompleted JobStatus = "completed"
	// StatusCanceled: a user canceled it.
	StatusCanceled JobStatus = "canceled"
	// StatusFailed: a worker reported an error that retrying cannot fix.
	StatusFailed JobStatus = "failed"
)

// Terminal reports whether the job will never run again.
func (s JobStatus) Terminal() bool {
	return s == StatusCompleted || s == StatusCanceled || s == StatusFailed
}

// Active reports whether the job holds the cluster's workers.
func (s JobStatus) Active() bool { return s == StatusWaiting || s == StatusRunning }

// Errors that Apply and the API return. The API maps them to HTTP codes.
var (
	// ErrNotFound: no such job.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the command is malformed (400).
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the command is impossible in the job's state (409).
	ErrConflict = errors.New("conflict")
	// ErrStale: the command is for an old generation or step; the sender
	// should reread its assignment (409).
	ErrStale = errors.New("stale")
	// ErrForbidden: the caller's certificate role may not do this (403),
	// or it presented none the API accepts (401).
	ErrForbidden = errors.New("forbidden")
)

// Ledger is a job's FLOP budget and what has been done with it.
type Ledger struct {
	BudgetFLOPs  float64 `json:"budget_flops"`
	FLOPsPerStep float64 `json:"flops_per_step"`
	TotalSteps   int64   `json:"total_steps"`
	StepsDone    int64   `json:"steps_done"`
	// OuterFLOPs, InnerSteps and WarmupSteps are a DiLoCo job's
	// outer-step cost, round length and every-step warm-up (zero when
	// syncing every step); see FLOPsAt.
	OuterFLOPs  float64 `json:"outer_flops,omitempty"`
	InnerSteps  int64   `json:"inner_steps,omitempty"`
	WarmupSteps int64   `json:"warmup_steps,omitempty"`
	// FLOPsUsed is FLOPsAt(StepsDone): the budget the job's current
	// progress consumed. It drops back when a generation resumes from an
	// older checkpoint.
	FLOPsUsed float64 `json:"flops_used"`
	// FLOPsSpent counts every step the cluster ran, including steps redone
	// after a failure: what the job really cost.
	FLOPsSpent float64 `json:"flops_spent"`
}

// RemainingFLOPs is the budget not yet used by the job's progress.
func (l Ledger) RemainingFLOPs() float64 { return l.BudgetFLOPs - l.FLOPsUsed }

// ProgressPoint is one progress report as recorded in the job.
type ProgressPoint struct {
	ProgressReport
	At time.Time `json:"at"`
}

// Job is the coordinator's durable record of one job, as the FSM holds it
// and the API returns it.
type Job struct {
	ID          string    `json:"id"`
	Spec        JobSpec   `json:"spec"`
	Status      JobStatus `json:"status"`
	Reason      string    `json:"reason"`
	SubmittedAt time.Time `json:"submitted_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	EndedAt     time.Time `json:"ended_at,omitzero"`

	// Generation counts membership changes; workers tag every message with
	// it, and anything from an older generation is refused.
	Generation   uint64    `json:"generation"`
	GenerationAt time.Time `json:"generation_at,omitzero"`
	// Members are the worker ids of the current generation, in rank order.
	Members []string `json:"members"`
	// Live is how many workers were alive when the generation formed.
	Live int `json:"live"`
	// StartStep is the step the current generation resumed from, and
	// ResumeFrom the committed checkpoint it resumed from (nil: fresh).
	StartStep  int64                `json:"start_step"`
	ResumeFrom *checkpoint.Manifest `json:"resume_from,omitempty"`
	// ResumeMemory is set when the current generation resumed from its
	// workers' memory (at StartStep) rather than from ResumeFrom.
	ResumeMemory *MemoryResume `json:"resume_memory,omitempty"`
	// Memory holds the memory reports of the generation the next one may
	// resume from (the current one while the job runs; MemorySource while
	// it waits), one per worker, sorted by worker: its runs stopped,
	// holding these ranges.
	Memory []MemoryReport `json:"memory,omitempty"`
	// MemorySource is set while the job waits for workers after a running
	// generation: that generation's workers keep their state through the
	// wait, so the generation that ends it may still resume from memory.
	MemorySource *MemorySource `json:"memory_source,omitempty"`
	Ledger       Ledger        `json:"ledger"`
	// Recent holds the last RecentProgress progress reports, oldest first.
	Recent []ProgressPoint `json:"recent,omitempty"`
	// Val is the last validation loss rank 0 reported (nil: none yet).
	Val *ValPoint `json:"val,omitempty"`

	// Checkpoint is the last committed checkpoint (nil: none yet).
	Checkpoint *checkpoint.Manifest `json:"checkpoint,omitempty"`
	// Retained are the committed checkpoints kept, oldest first; the last
	// is Checkpoint.
	Retained []checkpoint.Manifest `json:"retained,omitempty"`
	// Dropped are the checkpoints that fell out of Retained at the last
	// commit. Their files may be deleted now: a newer commit is applied.
	Dropped []checkpoint.Manifest `json:"dropped,omitempty"`
	// Pending collects shard reports for a checkpoint not yet committed.
	Pending *checkpoint.Manifest `json:"pending,omitempty"`

	// RequestID is the client's idempotency key for the submission.
	RequestID string `json:"request_id,omitempty"`

	// Stragglers are members computing much slower than their peers, as
	// the leader sees them when serving GET /v1/jobs/<id>: not raft state
	// (always empty in the FSM), reported and never acted on.
	Stragglers []Straggler `json:"stragglers,omitempty"`
}

// ValPoint is a validation loss and the step it was measured after.
type ValPoint struct {
	Step int64   `json:"step"`
	Loss float64 `json:"loss"`
}

// RecentProgress is how many progress reports a job keeps for `watch`.
const RecentProgress = 100

func (j *Job) clone() Job {
	c := *j
	c.Members = slices.Clone(j.Members)
	c.Recent = slices.Clone(j.Recent)
	if j.Val != nil {
		v := *j.Val
		c.Val = &v
	}
	c.Checkpoint = j.Checkpoint.Clone()
	c.Pending = j.Pending.Clone()
	c.ResumeFrom = j.ResumeFrom.Clone()
	c.ResumeMemory = j.ResumeMemory.Clone()
	if j.MemorySource != nil {
		src := *j.MemorySource
		src.Members = slices.Clone(j.MemorySource.Members)
		c.MemorySource = &src
	}
	if j.Memory != nil {
		c.Memory = make([]MemoryReport, len(j.Memory))
		for i, r := range j.Memory {
			c.Memory[i] = r.clone()
		}
	}
	c.Retained = cloneManifests(j.Retained)
	c.Dropped = cloneManifests(j.Dropped)
	c.Spec.Model.RoutedLayers = slices.Clone(j.Spec.Model.RoutedLayers)
	return c
}

func cloneManifests(ms []checkpoint.Manifest) []checkpoint.Manifest {
	if ms == nil {
		return nil
	}
	out := make([]checkpoint.Manifest, len(ms))
	for i := range ms {
		out[i] = *ms[i].Clone()
	}
	return out
}

// LastVal is the most recent validation loss and its step, if any.
func (j *Job) LastVal() (ValPoint, bool) {
	if j.Val == nil {
		return ValPoint{}, false
	}
	return *j.Val, true
}

// LastLoss is the most recent training loss, if any was reported.
func (j *Job) LastLoss() (float64, bool) {
	if len(j.Recent) == 0 {
		return 0, false
	}
	return j.Recent[len(j.Recent)-1].Loss, true
}
