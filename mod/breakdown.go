package mod

import "time"

// The per-op breakdown times the training step by class of work with a
// lap clock: each op, when it ends, charges the time since the previous
// lap to its class, so every instant of a replica's Forward and Backward
// lands in exactly one class and the classes add up to the replica's
// busy time. Timers rather than pprof because pprof samples CPU time, not
// wall-clock, and cannot see into OpenBLAS's C frames by op (every product
// reads as runtime.cgocall). When the breakdown is off the clock is nil and
// a lap is one predictable branch; when on, a lap is one time.Now (tens of
// nanoseconds, a few thousand per step) and allocates nothing.

// OpClass is a class of work in the training step.
type OpClass int

const (
	OpMatmul       OpClass = iota // projections, MLP, LM head: the token-parallel products
	OpAttention                   // per-head score and value products, softmax, head merge
	OpNormGeluRoPE                // RMSNorm, GELU, RoPE (with the head split it rides on)
	OpRouting                     // router logits, top-k, gather and scatter, decision loss
	OpOptimizer                   // AdamW
	OpCombine                     // combining the replicas' gradients: the ring's place in one process
	OpOther                       // embeddings, cross-entropy, residual adds, zeroing
	NumOpClasses
)

var opClassNames = [NumOpClasses]string{"matmul", "attention", "norm+gelu+rope", "routing", "optimizer", "ring/combine", "other"}

func (c OpClass) String() string {
	if c < 0 || c >= NumOpClasses {
		return "unknown"
	}
	return opClassNames[c]
}

// OpTimes is time and work per class, summed over steps.
type OpTimes struct {
	Time  [NumOpClasses]time.Duration
	FLOPs [NumOpClasses]float64 // matrix-product FLOPs (matmul, attention)
	Bytes [NumOpClasses]float64 // bytes read and written (memory-bound classes)
}

// Add adds o's time and work to t.
func (t *OpTimes) Add(o *OpTimes) {
	for i := range t.Time {
		t.Time[i] += o.Time[i]
		t.FLOPs[i] += o.FLOPs[i]
		t.Bytes[i] += o.Bytes[i]
	}
}

// Total is the time of all classes.
func (t *OpTimes) Total() time.Duration {
	var s time.Duration
	for _, d := range t.Time {
		s += d
	}
	return s
}

// opClock is a lap clock (see above); a nil clock does nothing.
type opClock struct {
	last  time.Time
	times OpTimes
}

// start begins a timed span: time before it is nobody's.
func (c *opClock) start() {
	if c != nil {
		c.last = time.Now()
	}
}

// lap charges the time since the last lap (or start) to class k, with
// flops of products and bytes read and written.
func (c *opClock) lap(k OpClass, flops float64, bytes int) {
	if c != nil {
		c.record(k, flops, bytes)
	}
}

// record is lap's work, apart so that lap inlines into the step and costs
// only the branch when the clock is off.
func (c *opClock) record(k OpClass, flops float64, bytes int) {
	now := time.Now()
	c.times.Time[k] += now.Sub(c.last)
	c.times.FLOPs[k] += flops
	c.times.Bytes[k] += float64(bytes)
	c.last = now
}

// elemBytes is the byte size of one F.
func elemBytes[F Float]() int {
	var x F
	return int(sizeOf(x))
}

// sizeOf is the byte size of an F, from a value of it.
func sizeOf[F Float](F) uintptr {
	var z F
	switch any(z).(type) {
	case float32:
		return 4
	}
	return 8
}

// EnableBreakdown turns the per-op clock on (or off) for every replica and
// clears it.
func (p *Parallel[F]) EnableBreakdown(on bool) {
	for _, m := range p.reps {
		m.clock = nil
		if on {
			m.clock = &opClock{}
		}
	}
}

// Breakdown returns the per-op times since EnableBreakdown, averaged over
// the replicas (they run at once, so the mean is the wall-clock each
// class takes), with zero times if the breakdown is off.
func (p *Parallel[F]) Breakdown() OpTimes {
	var sum OpTimes
	for _, m := range p.reps {
		if m.clock != nil {
			sum.Add(&m.clock.times)
		}
	}
	n := time.Duration(len(p.reps))
	for i := range sum.Time {
		sum.Time[i] /= n
	}
	return sum
}
