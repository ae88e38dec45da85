package coordinator

import (
	"fmt"
	"strconv"
	"strings"
)

// check refuses a restored state that Apply could not work on: a job
// missing, nil or queued twice, a job id that the next submission would
// reuse, an idempotency key naming no job, or a job whose spec breaks the
// invariants submit enforces (Apply divides by some of them). Snapshots
// come from coordinators only; this keeps a damaged one from panicking
// every replica that restores it.
func (s *fsmState) check() error {
	if len(s.Order) != len(s.Jobs) {
		return fmt.Errorf("%d jobs in the queue but %d in the state", len(s.Order), len(s.Jobs))
	}
	seen := make(map[string]bool, len(s.Order))
	for _, id := range s.Order {
		j := s.Jobs[id]
		switch {
		case j == nil:
			return fmt.Errorf("job %s is in the queue but not in the state", id)
		case seen[id]:
			return fmt.Errorf("job %s is in the queue twice", id)
		case j.ID != id:
			return fmt.Errorf("job %s is recorded as %q", id, j.ID)
		}
		seen[id] = true
		if n, ok := strings.CutPrefix(id, "job-"); ok {
			if seq, err := strconv.ParseUint(n, 10, 64); err == nil && seq > s.Seq {
				return fmt.Errorf("job %s is past the submission sequence %d", id, s.Seq)
			}
		}
		sp := j.Spec
		if sp.MinWorkers < 1 || sp.MaxWorkers < sp.MinWorkers || sp.Batch < 1 || sp.Batch%sp.MinWorkers != 0 ||
			sp.CheckpointEvery < 1 || sp.KeepCheckpoints < 1 {
			return fmt.Errorf("job %s: spec of workers %d..%d, batch %d, checkpoint_every %d, keep_checkpoints %d",
				id, sp.MinWorkers, sp.MaxWorkers, sp.Batch, sp.CheckpointEvery, sp.KeepCheckpoints)
		}
	}
	for key, id := range s.Requests {
		if s.Jobs[id] == nil {
			return fmt.Errorf("request %q names job %s, which is not in the state", truncate(key, 80), id)
		}
	}
	return nil
}
