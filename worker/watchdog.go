package worker

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/modcoord/modcoord/coordinator"
)

// A hung worker keeps its etcd lease when only its training goroutine is
// stuck (a wedged disk, a deadlock) while the keep-alive goroutine runs:
// the coordinator then keeps putting it in every generation and the job
// never moves. A process that is paused as a whole (SIGSTOP) renews
// nothing, so its lease expires after the TTL; the watchdog covers the
// other case from inside the process.

// DefaultHangTimeout is Options.HangTimeout's default: longer than a
// collective may wait for a silent peer (the ring deadline) plus a step,
// so that a worker waiting on a hung peer fails that collective, and is
// not itself taken for hung.
func DefaultHangTimeout(ringDeadline time.Duration) time.Duration {
	return 2*ringDeadline + 10*time.Second
}

// progress is when a run last finished a unit of work: a step, a restore,
// a poll of the final commit. It is read by the watchdog without locks.
type progress struct{ last atomic.Int64 } // Unix nanoseconds

func (p *progress) beat() { p.last.Store(time.Now().UnixNano()) }

func (p *progress) since(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, p.last.Load()))
}

// watchRun takes this worker out of the cluster when run r makes no
// progress for timeout: it marks r hung, closes the registration (the
// coordinator sees the worker leave at once and forms a generation
// without it) and cancels the run, which may or may not unstick it. The
// membership loop registers again once the run has ended (rejoin).
//
// Eviction bound: the coordinator sees the worker leave at most
// timeout + timeout/8 after its last progress (the check period), and
// forms the next generation one debounce later.
func watchRun(ctx context.Context, r *run, reg *coordinator.Registration, timeout time.Duration, m *Metrics, log *slog.Logger) {
	if timeout <= 0 {
		return
	}
	// At least a millisecond: a tiny -hang-timeout (under 8 ns) would
	// make the period zero, on which NewTicker panics.
	tick := time.NewTicker(max(timeout/8, time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.done:
			return
		case now := <-tick.C:
			stalled := r.progress.since(now)
			if stalled <= timeout {
				continue
			}
			r.hung.Store(true)
			m.hang()
			log.Error("no progress; leaving the cluster until this generation's run ends",
				"job", r.job, "generation", r.generation, "stalled", stalled.Round(time.Millisecond), "hang_timeout", timeout)
			if err := reg.Close(); err != nil {
				log.Warn("leave after a hang", "err", err)
			}
			r.cancel()
			return
		}
	}
}
