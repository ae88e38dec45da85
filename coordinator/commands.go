package coordinator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/modcoord/modcoord/checkpoint"
)

// CommandType tags a raft log command.
type CommandType string

// The raft log commands.
const (
	CmdSubmit           CommandType = "submit"
	CmdStartGeneration  CommandType = "start-generation"
	CmdProgress         CommandType = "progress"
	CmdReportShard      CommandType = "report-checkpoint-shard"
	CmdCommitCheckpoint CommandType = "commit-checkpoint"
	CmdComplete         CommandType = "complete"
	CmdCancel           CommandType = "cancel"
	CmdFail             CommandType = "fail"
	CmdMemoryReport     CommandType = "memory-report"
)

// Command is one raft log entry: a type tag, the job it is about, the
// proposer's clock (Apply never reads the clock, so every replica computes
// the same state), and exactly one payload matching the type.
type Command struct {
	Type CommandType `json:"type"`
	Job  string      `json:"job,omitempty"`
	At   time.Time   `json:"at"`

	Submit          *SubmitCommand          `json:"submit,omitempty"`
	StartGeneration *StartGenerationCommand `json:"start_generation,omitempty"`
	Progress        *ProgressReport         `json:"progress,omitempty"`
	Shard           *ShardReport            `json:"shard,omitempty"`
	Commit          *CommitCheckpoint       `json:"commit,omitempty"`
	Complete        *CompleteReport         `json:"complete,omitempty"`
	Cancel          *CancelRequest          `json:"cancel,omitempty"`
	Fail            *FailReport             `json:"fail,omitempty"`
	Memory          *MemoryReport           `json:"memory,omitempty"`
}

// SubmitCommand adds a job. The leader validates the spec and computes the
// plan before proposing, so that replicas never recompute FLOPs (a newer
// binary counting differently must not change an old job's step count).
type SubmitCommand struct {
	Spec      JobSpec `json:"spec"`
	Plan      Plan    `json:"plan"`
	RequestID string  `json:"request_id,omitempty"`
}

// SubmitResult is what a submission returns, and POST /v1/jobs's body.
type SubmitResult struct {
	ID           string  `json:"id"`
	Steps        int64   `json:"steps"`
	FLOPsPerStep float64 `json:"flops_per_step"`
	BudgetFLOPs  float64 `json:"budget_flops"`
}

// StartGenerationCommand replaces a job's workers. Members empty means the
// job waits, with Live of min_workers alive.
type StartGenerationCommand struct {
	// Generation must be the job's current generation + 1, so that two
	// proposers racing on the same change cannot both win.
	Generation uint64   `json:"generation"`
	Members    []string `json:"members"`
	Live       int      `json:"live"`
	// Memory, when set, resumes the generation from its workers' memory
	// instead of the last committed checkpoint (absent in older entries).
	Memory *MemoryResume `json:"memory,omitempty"`
}

// ProgressReport is rank 0's report after a step, and the body of
// POST /v1/jobs/{id}/progress.
type ProgressReport struct {
	Generation uint64 `json:"generation"`
	// Step is the number of steps completed.
	Step int64   `json:"step"`
	Loss float64 `json:"loss"`
	// ValLoss, when set, is the validation loss measured after step
	// ValStep (≤ Step: a report may carry an earlier step's validation
	// when reports were coalesced; 0 means Step).
	ValLoss *float64 `json:"val_loss,omitempty"`
	ValStep int64    `json:"val_step,omitempty"`
	// Tokens and WallS are the tokens trained and the seconds taken since
	// the previous report (normally one step); tokens/s is their ratio.
	Tokens int64   `json:"tokens"`
	WallS  float64 `json:"wall_s"`
	Worker string  `json:"worker"`
}

// ShardReport is one worker's report that its checkpoint shard for Step is
// written, and the body of POST /v1/jobs/{id}/checkpoints.
type ShardReport struct {
	Generation uint64               `json:"generation"`
	Step       int64                `json:"step"`
	Shard      checkpoint.ShardInfo `json:"shard"`
	// Config is the run's checkpoint config (model shape and tensor
	// layout), the same from every rank; it goes into the manifest as is.
	Config json.RawMessage `json:"config"`
}

// ShardResult says whether every rank has now reported for the step.
type ShardResult struct {
	Complete bool `json:"complete"`
}

// CommitCheckpoint makes the pending checkpoint for Step the job's last
// committed one.
type CommitCheckpoint struct {
	Generation uint64 `json:"generation"`
	Step       int64  `json:"step"`
}

// CommitResult is the committed manifest and those that fell out of
// retention: their files may be deleted now.
type CommitResult struct {
	Manifest checkpoint.Manifest `json:"manifest"`
	// Retained are the committed checkpoints kept after this commit,
	// oldest first (the last is Manifest); Dropped fell out of them.
	Retained []checkpoint.Manifest `json:"retained,omitempty"`
	Dropped  []checkpoint.Manifest `json:"dropped,omitempty"`
}

// CompleteReport says that the generation ran the job's last step, and is
// the body of POST /v1/jobs/{id}/complete.
type CompleteReport struct {
	Generation uint64 `json:"generation"`
	Step       int64  `json:"step"`
}

// CancelRequest is the body of POST /v1/jobs/{id}/cancel (optional).
type CancelRequest struct {
	Reason string `json:"reason,omitempty"`
}

// FailReport ends a job that cannot go on (a missing data file, a diverged
// loss), and is the body of POST /v1/jobs/{id}/fail. Generation 0 means any.
type FailReport struct {
	Generation uint64 `json:"generation,omitempty"`
	Reason     string `json:"reason"`
}

// checkPayload checks that the command carries the payload its type names,
// and nothing else.
func (c *Command) checkPayload() error {
	set := 0
	for _, p := range []bool{c.Submit != nil, c.StartGeneration != nil, c.Progress != nil, c.Shard != nil,
		c.Commit != nil, c.Complete != nil, c.Cancel != nil, c.Fail != nil, c.Memory != nil} {
		if p {
			set++
		}
	}
	var ok bool
	switch c.Type {
	case CmdSubmit:
		ok = c.Submit != nil
	case CmdStartGeneration:
		ok = c.StartGeneration != nil
	case CmdProgress:
		ok = c.Progress != nil
	case CmdReportShard:
		ok = c.Shard != nil
	case CmdCommitCheckpoint:
		ok = c.Commit != nil
	case CmdComplete:
		ok = c.Complete != nil
	case CmdCancel:
		ok = c.Cancel != nil
	case CmdFail:
		ok = c.Fail != nil
	case CmdMemoryReport:
		ok = c.Memory != nil
	default:
		return fmt.Errorf("%w: unknown command type %q", ErrInvalid, c.Type)
	}
	if !ok || set != 1 {
		return fmt.Errorf("%w: command %q needs exactly its own payload", ErrInvalid, c.Type)
	}
	if c.Type != CmdSubmit && c.Job == "" {
		return fmt.Errorf("%w: command %q names no job", ErrInvalid, c.Type)
	}
	return nil
}

func encodeCommand(c Command) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.Type, err)
	}
	return b, nil
}
