package mod

import (
	"fmt"
	"math"

	"github.com/modcoord/modcoord/vecmath"
)

// Model is a decoder-only MoD transformer with its activations and gradient
// buffers for a fixed batch size. All memory is allocated in NewModel; a
// training step (Forward then Backward) allocates nothing.
//
// The parameters and gradients are flat vectors laid out by Layout; the
// model only reads params and only writes grads, so several models (say, a
// training one and an evaluation one with another batch size) may share a
// parameter slice.
type Model[F Float] struct {
	cfg    Config
	layout *Layout
	batch  int

	params, grads []F

	layers   []layer[F]
	cos, sin []F // RoPE tables [T, hd/2]

	// Embedding output and the final norm, LM head and loss.
	tokens, targets []int32
	x0              []F // [N,D] embeddings = input of layer 0
	xf              []F // [N,D] output of the last layer
	uf, invf        []F // final norm output [N,D] and 1/rms [N]
	logits          []F // [N,V], overwritten by dlogits in Backward
	ceRow           []F // [V] scratch for the cross-entropy's exponentials
	lmHead          matmul
	dlmHead, duf    matmul

	// Backward: gradients of the residual stream between layers. Layer i
	// reads gradBuf(i+1) and writes gradBuf(i); two buffers alternate, and
	// being fixed per layer they can be baked into the layer's plans.
	gradBufs [2][]F
	duf2     []F // [N,D] gradient wrt the final norm's output
	scratch  *scratch[F]

	// clock times the step by class of op for the breakdown; nil when off.
	clock *opClock
	// attnBlock is causal attention's row block (attnBlock; tests vary it).
	attnBlock int

	// causal makes routed layers admit the tokens whose causal decision
	// says so (logit > 0) instead of the top-k: the routing used for
	// sampling. Such a model runs forward only.
	causal bool

	// Test hooks.
	forceAllWeightOne bool // route every token at weight 1 (dense equivalence)

	lastLoss   Loss
	hasTargets bool
}

// Loss is the result of a forward pass over one batch.
type Loss struct {
	// Total is CE + aux_loss_weight · Σ BCE: the objective that is differentiated.
	Total float64 `json:"total"`
	// CE is the mean next-token cross-entropy in nats per token.
	CE float64 `json:"ce"`
	// BCE is the causal-decision loss of each routed layer, in layer order.
	BCE []float64 `json:"bce,omitempty"`
}

// NewModel allocates a model for cfg and batch sequences, with freshly
// initialised parameters (a pure function of cfg.Seed).
func NewModel[F Float](cfg Config, batch int) (*Model[F], error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	l := NewLayout(cfg)
	params := make([]F, l.Total)
	InitParams(cfg, l, params)
	return NewModelWithParams(cfg, batch, params)
}

// NewModelWithParams allocates a model that computes with the given flat
// parameter vector (not copied).
func NewModelWithParams[F Float](cfg Config, batch int, params []F) (*Model[F], error) {
	return newModel(cfg, batch, params, false)
}

// NewCausalModel allocates a forward-only model that routes by the learned
// causal decision, as sampling does, instead of by top-k. Routed layers
// then process a varying number of tokens per sequence (buffers are sized
// for all T), so it costs as much as the dense model; it is for evaluation
// and as the reference for the incremental Decoder.
func NewCausalModel[F Float](cfg Config, batch int, params []F) (*Model[F], error) {
	return newModel(cfg, batch, params, true)
}

func newModel[F Float](cfg Config, batch int, params []F, causal bool) (*Model[F], error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	if batch < 1 || batch > 1<<16 {
		return nil, fmt.Errorf("batch %d is out of range; use 1..65536 sequences", batch)
	}
	l := NewLayout(cfg)
	if len(params) != l.Total {
		return nil, fmt.Errorf("parameter vector has %d values, config needs %d", len(params), l.Total)
	}
	m := &Model[F]{cfg: cfg, layout: l, batch: batch, params: params, grads: make([]F, l.Total), causal: causal, attnBlock: attnBlock}
	m.alloc()
	return m, nil
}

// Config returns the model's (defaulted) config.
func (m *Model[F]) Config() Config { return m.cfg }

// Layout returns the flat parameter layout.
func (m *Model[F]) Layout() *Layout { return m.layout }

// Batch is the number of sequences per forward pass.
func (m *Model[F]) Batch() int { return m.batch }

// Params is the flat parameter vector.
func (m *Model[F]) Params() []F { return m.params }

// Grads is the flat gradient vector written by Backward.
func (m *Model[F]) Grads() []F { return m.grads }

// Logits returns the [batch·T, V] logits of the last Forward.
func (m *Model[F]) Logits() []F { return m.logits }

// Selected returns, for routed layer l, the selected positions of the last
// Forward: [batch, k], ascending within each sequence. nil for a dense layer
// or under causal routing (see SelectedIn).
func (m *Model[F]) Selected(l int) []int32 {
	if !m.layers[l].routed || m.causal {
		return nil
	}
	return m.layers[l].routing.selected
}

// SelectedIn returns the positions routed layer l processed in sequence b
// in the last Forward, ascending.
func (m *Model[F]) SelectedIn(l, b int) []int32 {
	ly := &m.layers[l]
	if !ly.routed {
		return nil
	}
	s := ly.seqTokens
	return ly.routing.selected[b*s : b*s+ly.routing.count[b]]
}

// RouterLogits returns routed layer l's router logits [batch, T] of the last Forward.
func (m *Model[F]) RouterLogits(l int) []F { return m.layers[l].routing.logits }

// DecisionLogits returns routed layer l's causal-decision logits [batch, T]:
// the router logits (aux-loss mode) or the predictor logits (predictor mode).
func (m *Model[F]) DecisionLogits(l int) []F {
	if m.layers[l].predictor {
		return m.layers[l].pred.logits
	}
	if m.layers[l].random {
		return m.layers[l].routing.random // the random draws decide
	}
	return m.layers[l].routing.logits
}

func (m *Model[F]) alloc() {
	cfg := m.cfg
	B, T, D, V := m.batch, cfg.SeqLen, cfg.DModel, cfg.Vocab
	N := B * T
	m.tokens, m.targets = make([]int32, N), make([]int32, N)
	m.x0 = make([]F, N*D)
	m.uf, m.invf = make([]F, N*D), make([]F, N)
	m.logits = make([]F, N*V)
	m.ceRow = make([]F, V)
	m.gradBufs = [2][]F{make([]F, N*D), make([]F, N*D)}
	m.duf2 = make([]F, N*D)
	if cfg.Positions == PositionsRoPE {
		m.cos, m.sin = ropeTables[F](T, cfg.HeadDim(), cfg.RoPETheta)
	}
	m.layers = make([]layer[F], cfg.Layers)
	for i := range m.layers {
		out := m.x0 // placeholder; set below
		if i+1 < cfg.Layers {
			out = make([]F, N*D)
		} else {
			m.xf = make([]F, N*D)
			out = m.xf
		}
		m.layers[i].alloc(m, i, out)
	}
	// Chain inputs: layer i reads the previous layer's output.
	for i := range m.layers {
		if i == 0 {
			m.layers[i].in = m.x0
		} else {
			m.layers[i].in = m.layers[i-1].out
		}
		m.layers[i].plan(m)
	}
	head := m.param("lm_head")
	m.lmHead = planMatMul(m.uf, false, head, false, m.logits, N, D, V)
	m.dlmHead = planMatMul(m.uf, true, m.logits, false, m.grad("lm_head"), D, N, V)
	m.duf = planMatMul(m.logits, false, head, true, m.duf2, N, V, D)
}

// gradBuf is the gradient wrt the input of layer i (the output of i−1).
func (m *Model[F]) gradBuf(i int) []F { return m.gradBufs[i%2] }

func (m *Model[F]) param(name string) []F {
	t, ok := m.layout.Lookup(name)
	if !ok {
		return nil
	}
	return m.params[t.Offset : t.Offset+t.Size()]
}

func (m *Model[F]) grad(name string) []F {
	t, ok := m.layout.Lookup(name)
	if !ok {
		return nil
	}
	return m.grads[t.Offset : t.Offset+t.Size()]
}

// Forward runs the model on tokens [batch·T]. With targets it also computes
// the loss (and Backward may follow); with nil targets only the logits.
func (m *Model[F]) Forward(tokens, targets []int32) (Loss, error) {
	cfg := m.cfg
	B, T, D, V := m.batch, cfg.SeqLen, cfg.DModel, cfg.Vocab
	N := B * T
	if len(tokens) != N {
		return Loss{}, fmt.Errorf("forward: got %d tokens, want batch %d × seq_len %d = %d", len(tokens), B, T, N)
	}
	if targets != nil && len(targets) != N {
		return Loss{}, fmt.Errorf("forward: got %d targets, want %d", len(targets), N)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= V {
			return Loss{}, fmt.Errorf("forward: token %d at position %d is outside the vocabulary [0,%d)", t, i, V)
		}
	}
	copy(m.tokens, tokens)
	m.hasTargets = targets != nil
	if targets != nil {
		for i, t := range targets {
			if t < 0 || int(t) >= V {
				return Loss{}, fmt.Errorf("forward: target %d at position %d is outside the vocabulary [0,%d)", t, i, V)
			}
		}
		copy(m.targets, targets)
	}

	m.clock.start()
	// Token (and learned position) embeddings.
	emb, pos := m.param("tok_emb"), m.param("pos_emb")
	for i, t := range m.tokens {
		copy(m.x0[i*D:(i+1)*D], emb[int(t)*D:int(t+1)*D])
		if pos != nil {
			add(m.x0[i*D:(i+1)*D], pos[(i%T)*D:(i%T+1)*D])
		}
	}
	for i := range m.layers {
		m.layers[i].forward(m)
	}
	m.clock.lap(OpOther, 0, 0)
	rmsnormForward(m.uf, m.invf, m.xf, m.param("ln_f"), N, D, cfg.NormEps)
	m.clock.lap(OpNormGeluRoPE, 0, 2*N*D*elemBytes[F]())
	m.lmHead.run()
	m.clock.lap(OpMatmul, m.lmHead.flops(), 0)
	if targets == nil {
		return Loss{}, nil
	}

	// Mean cross-entropy over all N tokens; logits become dlogits in Backward.
	var ce float64
	for i := 0; i < N; i++ {
		ce += crossEntropy(m.logits[i*V:(i+1)*V], m.targets[i], m.ceRow)
	}
	loss := Loss{CE: ce / float64(N)}
	loss.Total = loss.CE
	for i := range m.layers {
		if m.layers[i].routed {
			b := m.layers[i].routing.bce
			loss.BCE = append(loss.BCE, b)
			loss.Total += cfg.AuxLossWeight * b
		}
	}
	m.lastLoss = loss
	m.clock.lap(OpOther, 0, 0)
	return loss, nil
}

// crossEntropy is −log softmax(logits)[target], computed stably, with
// scratch [len(logits)] for the exponentials.
func crossEntropy[F Float](logits []F, target int32, scratch []F) float64 {
	mx := logits[0]
	for _, v := range logits[1:] {
		mx = max(mx, v)
	}
	scratch = scratch[:len(logits)]
	copy(scratch, logits)
	sum := expShiftedSum(scratch, mx)
	return math.Log(sum) + float64(mx) - float64(logits[target])
}

// expShiftedSum sets x[j] = exp(x[j] − mx) in place and returns Σ x[j],
// summed in float64 in index order. float32 takes vecmath.ExpScaled, whose
// bits are exp32's (x·1 is x), so only the speed differs from the loop.
func expShiftedSum[F Float](x []F, mx F) float64 {
	if x32, ok := any(x).([]float32); ok {
		vecmath.ExpScaled(x32, x32, 1, float32(mx))
	} else {
		for j, v := range x {
			x[j] = exp(v - mx)
		}
	}
	var sum float64
	for _, e := range x {
		sum += float64(e)
	}
	return sum
}

// Backward writes d(Loss.Total)/d(params) of the last Forward into Grads.
func (m *Model[F]) Backward() error {
	if !m.hasTargets {
		return fmt.Errorf("backward: the last forward pass had no targets")
	}
	if m.causal {
		return fmt.Errorf("backward: a causal-routing model is for evaluation and sampling only")
	}
	cfg := m.cfg
	B, T, D, V := m.batch, cfg.SeqLen, cfg.DModel, cfg.Vocab
	N := B * T
	m.clock.start()
	zero(m.grads)

	// dlogits = (softmax − onehot)/N, in place.
	invN := 1 / float64(N)
	for i := 0; i < N; i++ {
		row := m.logits[i*V : (i+1)*V]
		mx := row[0]
		for _, v := range row[1:] {
			mx = max(mx, v)
		}
		s := invN / expShiftedSum(row, mx)
		for j := range row {
			row[j] = F(float64(row[j]) * s)
		}
		row[m.targets[i]] -= F(invN)
	}
	m.clock.lap(OpOther, 0, 0)
	m.dlmHead.run()
	m.duf.run()
	m.clock.lap(OpMatmul, m.dlmHead.flops()+m.duf.flops(), 0)
	dOut := m.gradBuf(cfg.Layers)
	clear(dOut)
	rmsnormBackward(dOut, m.grad("ln_f"), m.duf2, m.xf, m.invf, m.param("ln_f"), N, D)
	m.clock.lap(OpNormGeluRoPE, 0, 4*N*D*elemBytes[F]())
	for i := len(m.layers) - 1; i >= 0; i-- {
		m.layers[i].backward(m)
	}
	dEmb := m.gradBuf(0)
	demb, dpos := m.grad("tok_emb"), m.grad("pos_emb")
	for i, t := range m.tokens {
		add(demb[int(t)*D:int(t+1)*D], dEmb[i*D:(i+1)*D])
		if dpos != nil {
			add(dpos[(i%T)*D:(i%T+1)*D], dEmb[i*D:(i+1)*D])
		}
	}
	m.clock.lap(OpOther, 0, 0)
	return nil
}
