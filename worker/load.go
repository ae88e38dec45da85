package worker

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/train"
)

// timedCollective measures how long this rank spends inside collectives,
// waiting for its peers included; a step's wall time minus that is its
// compute. It is used from the training goroutine only.
type timedCollective struct {
	inner train.Collective
	spent time.Duration
}

func (t *timedCollective) ReduceScatter(ctx context.Context, step uint64, buf []float32) error {
	defer t.time(time.Now())
	return t.inner.ReduceScatter(ctx, step, buf)
}

func (t *timedCollective) AllGather(ctx context.Context, step uint64, buf []float32) error {
	defer t.time(time.Now())
	return t.inner.AllGather(ctx, step, buf)
}

func (t *timedCollective) AllReduceScalars(ctx context.Context, step uint64, vals []float64) error {
	defer t.time(time.Now())
	return t.inner.AllReduceScalars(ctx, step, vals)
}

// ReduceScatterInt8 passes DiLoCo's int8 outer reduce-scatter through
// (the trainer checks for it by interface; without this method a wrapped
// ring would refuse compress: int8).
func (t *timedCollective) ReduceScatterInt8(ctx context.Context, step uint64, buf []float32) error {
	defer t.time(time.Now())
	rs, ok := t.inner.(interface {
		ReduceScatterInt8(ctx context.Context, step uint64, buf []float32) error
	})
	if !ok {
		return fmt.Errorf("the ring has no int8 reduce-scatter")
	}
	return rs.ReduceScatterInt8(ctx, step, buf)
}

func (t *timedCollective) time(t0 time.Time) { t.spent += time.Since(t0) }

// take returns the time spent in collectives since the last take.
func (t *timedCollective) take() time.Duration {
	d := t.spent
	t.spent = 0
	return d
}

// computeAverage is a moving average of a run's compute seconds per step,
// written by the training goroutine and read by the load publisher.
type computeAverage struct {
	bits atomic.Uint64 // float64; 0: no step yet
	step atomic.Int64
}

func (c *computeAverage) observe(step int64, compute time.Duration) {
	const alpha = 0.2 // about the last ten steps
	s := compute.Seconds()
	if old := math.Float64frombits(c.bits.Load()); old > 0 {
		s = old + alpha*(s-old)
	}
	c.bits.Store(math.Float64bits(max(s, 1e-9)))
	c.step.Store(step)
}

func (c *computeAverage) get() (seconds float64, step int64) {
	return math.Float64frombits(c.bits.Load()), c.step.Load()
}

// loadEvery is how often a training worker publishes its load.
const loadEvery = 5 * time.Second

// publishLoad puts run r's compute per step into the worker's registration
// every loadEvery until the run ends, for the leader's straggler report.
func publishLoad(ctx context.Context, o Options, r *run, reg *coordinator.Registration, info coordinator.WorkerInfo) {
	tick := time.NewTicker(loadEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.done:
			return
		case now := <-tick.C:
			s, step := r.compute.get()
			if s == 0 || r.hung.Load() {
				continue
			}
			o.Metrics.observeCompute(s)
			info.Load = &coordinator.WorkerLoad{Job: r.job, Generation: r.generation, Step: step, ComputeS: s, At: now.UTC()}
			uctx, cancel := context.WithTimeout(ctx, loadEvery)
			if err := reg.Update(uctx, info); err != nil {
				o.Log.Debug("publish load", "err", err)
			}
			cancel()
		}
	}
}
