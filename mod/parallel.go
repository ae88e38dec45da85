package mod

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// Parallel runs one batch across several replicas of a model, one per core,
// each on a contiguous slice of the sequences. The replicas share the
// parameter vector; their gradients are combined, weighted by their share
// of the batch, in a fixed order, so the result does not depend on timing.
type Parallel[F Float] struct {
	cfg    Config
	layout *Layout
	batch  int
	params []F
	grads  []F
	reps   []*Model[F]
	first  []int // first sequence of each replica; first[len(reps)] = batch
	losses []Loss
	errs   []error

	// The per-replica steps, bound once so that dispatching them to the
	// worker goroutines allocates nothing.
	tokens, targets       []int32
	forwardFn, backwardFn func(int) error
	reduceFn              func(int) error
	jobs                  chan parallelJob
	wg                    sync.WaitGroup
}

type parallelJob struct {
	fn func(int) error
	i  int
}

// NewParallel allocates replicas for batch sequences with fresh weights
// (a pure function of cfg.Seed). workers ≤ 0 means one per core.
func NewParallel[F Float](cfg Config, batch, workers int) (*Parallel[F], error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	l := NewLayout(cfg)
	params := make([]F, l.Total)
	InitParams(cfg, l, params)
	return NewParallelWithParams(cfg, batch, workers, params)
}

// NewParallelWithParams is NewParallel over an existing parameter vector.
func NewParallelWithParams[F Float](cfg Config, batch, workers int, params []F) (*Parallel[F], error) {
	return newParallel(cfg, batch, workers, params, false)
}

// NewParallelCausal is a forward-only Parallel whose replicas route by the
// causal decision (see NewCausalModel).
func NewParallelCausal[F Float](cfg Config, batch, workers int, params []F) (*Parallel[F], error) {
	return newParallel(cfg, batch, workers, params, true)
}

func newParallel[F Float](cfg Config, batch, workers int, params []F, causal bool) (*Parallel[F], error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = max(1, min(workers, batch))
	p := &Parallel[F]{batch: batch, params: params, first: make([]int, workers+1)}
	for i := 0; i < workers; i++ {
		p.first[i+1] = (i + 1) * batch / workers
		m, err := newModel(cfg, p.first[i+1]-p.first[i], params, causal)
		if err != nil {
			return nil, err
		}
		p.reps = append(p.reps, m)
	}
	p.cfg, p.layout = p.reps[0].cfg, p.reps[0].layout
	p.grads = make([]F, p.layout.Total)
	p.losses = make([]Loss, workers)
	p.errs = make([]error, workers)
	p.forwardFn, p.backwardFn, p.reduceFn = p.forwardReplica, p.backwardReplica, p.reducePart
	p.jobs = make(chan parallelJob)
	for i := 1; i < workers; i++ {
		go func() {
			for j := range p.jobs {
				p.errs[j.i] = j.fn(j.i)
				p.wg.Done()
			}
		}()
	}
	return p, nil
}

// Close stops the worker goroutines.
func (p *Parallel[F]) Close() { close(p.jobs) }

// Config returns the model config.
func (p *Parallel[F]) Config() Config { return p.cfg }

// Layout returns the flat parameter layout.
func (p *Parallel[F]) Layout() *Layout { return p.layout }

// Batch is the number of sequences per forward pass.
func (p *Parallel[F]) Batch() int { return p.batch }

// Params is the shared flat parameter vector.
func (p *Parallel[F]) Params() []F { return p.params }

// Grads is the combined gradient written by Backward.
func (p *Parallel[F]) Grads() []F { return p.grads }

// Replicas returns the replicas, in batch order.
func (p *Parallel[F]) Replicas() []*Model[F] { return p.reps }

// run calls fn(i) for every replica i concurrently and joins the errors.
func (p *Parallel[F]) run(fn func(int) error) error {
	p.wg.Add(len(p.reps) - 1)
	for i := 1; i < len(p.reps); i++ {
		p.jobs <- parallelJob{fn, i}
	}
	p.errs[0] = fn(0)
	p.wg.Wait()
	for _, err := range p.errs {
		if err != nil {
			return errors.Join(p.errs...)
		}
	}
	return nil
}

func (p *Parallel[F]) forwardReplica(i int) error {
	T := p.cfg.SeqLen
	lo, hi := p.first[i]*T, p.first[i+1]*T
	var tg []int32
	if p.targets != nil {
		tg = p.targets[lo:hi]
	}
	var err error
	p.losses[i], err = p.reps[i].Forward(p.tokens[lo:hi], tg)
	return err
}

func (p *Parallel[F]) backwardReplica(i int) error { return p.reps[i].Backward() }

// Forward runs tokens [batch·T] (and targets, or nil) through the replicas.
// The loss is the mean over the whole batch.
func (p *Parallel[F]) Forward(tokens, targets []int32) (Loss, error) {
	T := p.cfg.SeqLen
	if len(tokens) != p.batch*T || (targets != nil && len(targets) != p.batch*T) {
		return Loss{}, fmt.Errorf("forward: got %d tokens and %d targets, want batch %d × seq_len %d", len(tokens), len(targets), p.batch, T)
	}
	p.tokens, p.targets = tokens, targets
	err := p.run(p.forwardFn)
	p.tokens, p.targets = nil, nil
	if err != nil || targets == nil {
		return Loss{}, err
	}
	var out Loss
	for i, l := range p.losses {
		w := float64(p.first[i+1]-p.first[i]) / float64(p.batch)
		out.Total += w * l.Total
		out.CE += w * l.CE
		if out.BCE == nil {
			out.BCE = make([]float64, len(l.BCE))
		}
		for j, b := range l.BCE {
			out.BCE[j] += w * b
		}
	}
	return out, nil
}

// Backward computes every replica's gradient and combines them into Grads:
// Σ_i share_i · grad_i, summed in replica order within each element, with
// the elements split among the cores.
func (p *Parallel[F]) Backward() error {
	if err := p.run(p.backwardFn); err != nil {
		return err
	}
	return p.run(p.reduceFn)
}

// reducePart combines the replicas' gradients over one part of the vector.
func (p *Parallel[F]) reducePart(part int) error {
	n := len(p.grads)
	clock := p.reps[part].clock
	clock.start()
	// One read of every replica's part and one write of the result.
	defer clock.lap(OpCombine, 0, (len(p.reps)+1)*(n/len(p.reps))*elemBytes[F]())
	{
		lo, hi := part*n/len(p.reps), (part+1)*n/len(p.reps)
		dst := p.grads[lo:hi]
		for i, m := range p.reps {
			w := F(float64(p.first[i+1]-p.first[i]) / float64(p.batch))
			src := m.grads[lo:hi]
			if i == 0 {
				for j := range dst {
					dst[j] = w * src[j]
				}
				continue
			}
			for j := range dst {
				dst[j] += w * src[j]
			}
		}
		return nil
	}
}

// RowCE returns the cross-entropy of every token of the last Forward with
// targets, in batch order, into dst [batch·T].
func (p *Parallel[F]) RowCE(targets []int32, dst []float64) {
	T, V := p.cfg.SeqLen, p.cfg.Vocab
	for i, m := range p.reps {
		for r := 0; r < (p.first[i+1]-p.first[i])*T; r++ {
			dst[p.first[i]*T+r] = crossEntropy(m.logits[r*V:(r+1)*V], targets[p.first[i]*T+r], m.ceRow)
		}
	}
}
