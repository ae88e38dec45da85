package worker

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/train"
)

// reporter sends rank 0's progress to the coordinator without holding up
// training: only the latest report waits to be sent. A cancel answer asks
// every rank to stop.
type reporter struct {
	latest    chan coordinator.ProgressReport
	done      chan struct{}
	closeOnce sync.Once
}

func newReporter(ctx context.Context, o Options, a coordinator.Assignment, tr *train.Trainer, log *slog.Logger) *reporter {
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

// send queues a step's report; val is the validation loss measured after
// the step, if it was.
func (r *reporter) send(res train.StepResult, took time.Duration, val *float64) {
	// JSON has no NaN: a report with one would not encode, and the
	// coordinator refuses it. The trainer fails such a step before it
	// reaches here; this keeps any other path from wedging the reporter.
	if math.IsNaN(res.Loss) || math.IsInf(res.Loss, 0) {
		return
	}
	p := coordinator.ProgressReport{Step: res.Step, Loss: res.Loss, Tokens: int64(res.Tokens), WallS: took.Seconds()}
	if val != nil {
		p.ValLoss, p.ValStep = val, res.Step
	}
	select {
	case old := <-r.latest: // coalesce with the unsent one
		p.Tokens += old.Tokens
		p.WallS += old.WallS
		if p.ValLoss == nil { // keep an unsent validation loss, with its step
			p.ValLoss, p.ValStep = old.ValLoss, old.ValStep
		}
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
