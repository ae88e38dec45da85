package mod

import (
	"math"
	"slices"
)

// layer is one transformer block, dense or routed. A routed layer runs the
// block on only the k = floor(C·T) tokens of each sequence with the highest
// router logits, in their original order; every other token rides the
// residual stream unchanged and is neither a key nor a value here.
//
// On the tokens it processes, with blockIn their rows of the layer input,
// the block computes
//
//	attn  = attention(rmsnorm(blockIn)·Wqkv) · Wo
//	resid = blockIn + attn
//	mlp   = gelu(rmsnorm(resid)·W1) · W2
//	f     = attn + mlp
//
// and the layer outputs blockIn + f when dense, and in + σ(z)·f for the
// selected tokens (in for the others) when routed, z being the router logit.
//
// Shapes: N = B·T tokens in the batch; the block processes n = B·s of them,
// s per sequence (s = T, or k under top-k routing).
type layer[F Float] struct {
	index     int
	routed    bool // MoD: the block runs on the selected tokens only
	random    bool // routed, choosing its tokens at random (the control)
	predictor bool // routed, with the causal decision made by a separate MLP
	seqTokens int  // s: tokens per sequence that the block processes
	tokens    int  // n = B·s: tokens that the block processes in all

	in, out []F // [N,D] residual stream into and out of the layer

	param, grad layerTensors[F]  // views into Model.params and Model.grads
	routing     routingState[F]  // routed layers only
	pred        predictorActs[F] // predictor layers only
	act         blockActs[F]     // forward activations
	d           layerGradFlow[F] // d.out in, d.in out of the backward pass
	plans       layerPlans       // matrix products over the buffers above
}

// layerTensors are one layer's tensors, named as in Layout; a layer holds
// two, its parameters and their gradients. Matrices are [in,out]: y = x·W.
type layerTensors[F Float] struct {
	ln1, wqkv, wo, ln2, w1, w2 []F

	router []F // [D] routed layers only: z = in · router

	// The causal-decision predictor (predictor layers only):
	// logit = gelu(in·predW1 + predB1) · predW2 + predB2.
	predW1, predB1, predW2, predB2 []F
}

// routingState is what a routed layer decides in the forward pass and
// needs again in the backward pass.
type routingState[F Float] struct {
	logits   []F     // [N] router logits z
	selected []int32 // [B,s] selected positions, ascending per sequence
	count    []int   // [B] tokens selected per sequence: k, or under causal routing as decided
	weight   []F     // [B,s] router weights σ(z) of the selected tokens
	target   []F     // [N] 1 where selected, else 0: the causal decision's label
	random   []F     // [N] random routing only: the scores it routes by (routing_random.go)
	order    []int32 // [T] scratch for the top-k sort
	bce      float64 // the causal decision's loss in the last forward pass
}

// predictorActs are the predictor's activations over all N tokens.
type predictorActs[F Float] struct {
	fc, fcGelu []F // [N,P] hidden layer before and after GELU
	fcTanh     []F // [N,P] tanh inside GELU, kept for its backward
	logits     []F // [N] causal-decision logits
}

// blockActs are the block's activations, kept for the backward pass.
type blockActs[F Float] struct {
	pos     []int32 // [n] original position of each processed token
	blockIn []F     // [n,D] the processed tokens' inputs (aliases layer.in when dense)
	ln1     []F     // [n,D] rmsnorm(blockIn)·ln1
	ln1Rstd []F     // [n] 1/rms of each blockIn row
	qkv     []F     // [n,3D]
	q, k, v []F     // [B,H,s,hd] head-major, q and k rotated
	probs   []F     // [B,H,s,s] attention probabilities
	heads   []F     // [B,H,s,hd] attention output per head
	attnY   []F     // [n,D] heads merged
	attn    []F     // [n,D] attention's contribution to the residual
	resid   []F     // [n,D] blockIn + attn
	ln2     []F     // [n,D] rmsnorm(resid)·ln2
	ln2Rstd []F     // [n]
	fc      []F     // [n,F] MLP hidden layer before GELU
	fcGelu  []F     // [n,F] after GELU
	fcTanh  []F     // [n,F] tanh inside GELU, kept for its backward
	mlp     []F     // [n,D] the MLP's contribution to the residual
}

// layerGradFlow are the gradients that flow through the layer, as opposed
// to the parameter gradients and the scratch inside the block.
type layerGradFlow[F Float] struct {
	out, in []F // [N,D] wrt the layer's output and input (fixed buffers, see Model.gradBuf)
	skip    []F // [n,D] wrt blockIn through the residual connection that bypasses f
	block   []F // [n,D] wrt the block output f
	blockIn []F // [n,D] wrt blockIn in all
}

// layerPlans are the layer's matrix products, planned once over the
// buffers they read and write (see matmul); each is named after what it
// computes, and its formula is repeated where it runs.
type layerPlans struct {
	qkv    matmul // qkv = ln1 · Wqkv
	attn   matmul // attn = attnY · Wo
	fc     matmul // fc = ln2 · W1
	mlp    matmul // mlp = fcGelu · W2
	predFc matmul // pred.fc = in · predW1
	// The per-head products come attnBlocks to a (b,h) pair, one per block
	// of rows (or columns) of the [s,s] attention matrix; see causalBlocks.
	attnBlocks int
	// The per-head products' work, forward and backward, for the breakdown.
	attnForwardFLOPs, attnBackwardFLOPs float64
	scores                              []matmul // per (b,h): probs = q · kᵀ, before the softmax
	heads                               []matmul // per (b,h): heads = probs · v

	dFcGelu matmul   // dFcGelu = dBlock · W2ᵀ
	dW2     matmul   // dW2 = fcGeluᵀ · dBlock
	dW1     matmul   // dW1 = ln2ᵀ · dFc
	dLn2    matmul   // dLn2 = dFc · W1ᵀ
	dAttnY  matmul   // dAttnY = dAttn · Woᵀ
	dWo     matmul   // dWo = attnYᵀ · dAttn
	dWqkv   matmul   // dWqkv = ln1ᵀ · dqkv
	dLn1    matmul   // dLn1 = dqkv · Wqkvᵀ
	dPredW1 matmul   // dPredW1 = inᵀ · dPredFc
	dProbs  []matmul // per (b,h): dProbs = dHeads · vᵀ
	dv      []matmul // per (b,h): dv = probsᵀ · dHeads
	dq      []matmul // per (b,h): dq = dScores · k
	dk      []matmul // per (b,h): dk = dScoresᵀ · q
}

// attnBlock is the row block of causal attention's products. Under the
// causal mask row i of the [s,s] scores needs columns 0..i only, so row
// block r is computed against the columns of blocks 0..r and the products
// skip the masked upper triangle, but for the upper half of the diagonal
// blocks: (nb+1)/(2nb) of the full work for nb blocks (62.5% at s = 512).
// The skipped terms are exact zeros (probabilities and score gradients
// above the diagonal), so the result changes only by the BLAS's summation
// order within a shorter dot product. A block of 128 rows keeps the
// products large enough for the BLAS to run near its peak.
const attnBlock = 128

// causalBlocks is how many row blocks of block rows the [s,s] attention
// products are cut into: one (the whole matrix, as before blocking)
// unless there are at least two full blocks.
func causalBlocks(s, block int) int {
	if block < 1 || s < 2*block {
		return 1
	}
	return (s + block - 1) / block
}

// scratch holds the backward pass's intermediate gradients, shared by all
// layers (they run one at a time) and sized for a dense layer. dX is the
// gradient wrt the activation X of blockActs or predictorActs.
type scratch[F Float] struct {
	skip, block, blockIn []F // [N,D] layerGradFlow's buffers, routed layers only
	dFcGelu, dFc         []F // [N,F]
	dLn2, dResid, dAttn  []F // [N,D]
	dAttnY, dLn1         []F // [N,D]
	dHeads, dq, dk, dv   []F // [N,D] head-major
	dqkv                 []F // [N,3D]
	dProbs               []F // [B,H,T,T], turned into dScores in place
	dLogits              []F // [N] wrt the router logits
	dPredFc              []F // [N,P]
}

func (m *Model[F]) allocScratch() {
	if m.scratch != nil {
		return
	}
	cfg := m.cfg
	N, D, Fh, T := m.batch*cfg.SeqLen, cfg.DModel, cfg.MLPHidden, cfg.SeqLen
	m.scratch = &scratch[F]{
		skip: make([]F, N*D), block: make([]F, N*D), blockIn: make([]F, N*D),
		dFcGelu: make([]F, N*Fh), dFc: make([]F, N*Fh),
		dLn2: make([]F, N*D), dResid: make([]F, N*D), dAttn: make([]F, N*D), dAttnY: make([]F, N*D), dLn1: make([]F, N*D),
		dHeads: make([]F, N*D), dq: make([]F, N*D), dk: make([]F, N*D), dv: make([]F, N*D),
		dqkv: make([]F, N*3*D), dProbs: make([]F, m.batch*cfg.Heads*T*T), dLogits: make([]F, N),
		dPredFc: make([]F, N*cfg.PredictorHidden),
	}
}

// layerTensorViews slices one layer's tensors out of a flat vector laid
// out by Layout; those the layer does not have are nil.
func layerTensorViews[F Float](v []F, o layerOffsets, cfg Config) layerTensors[F] {
	D, Fh, P := cfg.DModel, cfg.MLPHidden, cfg.PredictorHidden
	view := func(off, size int) []F {
		if off < 0 {
			return nil
		}
		return v[off : off+size]
	}
	return layerTensors[F]{
		ln1: view(o.ln1, D), wqkv: view(o.wqkv, 3*D*D), wo: view(o.wo, D*D),
		ln2: view(o.ln2, D), w1: view(o.w1, D*Fh), w2: view(o.w2, Fh*D),
		router: view(o.router, D),
		predW1: view(o.predW1, D*P), predB1: view(o.predB1, P),
		predW2: view(o.predW2, P), predB2: view(o.predB2, 1),
	}
}

func (ly *layer[F]) alloc(m *Model[F], index int, out []F) {
	cfg := m.cfg
	B, T, D, Fh, H, P := m.batch, cfg.SeqLen, cfg.DModel, cfg.MLPHidden, cfg.Heads, cfg.PredictorHidden
	N := B * T
	o := m.layout.layer(index, cfg)
	ly.index, ly.routed, ly.predictor = index, o.routed, o.predictor
	ly.random = o.routed && cfg.RandomRouting()
	ly.out = out
	ly.seqTokens = T
	if ly.routed && !m.causal {
		ly.seqTokens = cfg.TopK()
	}
	ly.tokens = B * ly.seqTokens
	s, n := ly.seqTokens, ly.tokens
	ly.param, ly.grad = layerTensorViews(m.params, o, cfg), layerTensorViews(m.grads, o, cfg)
	act := &ly.act
	if ly.routed {
		ly.routing = routingState[F]{
			logits: make([]F, N), target: make([]F, N),
			selected: make([]int32, n), weight: make([]F, n),
			count: make([]int, B),
			order: make([]int32, T),
		}
		if ly.random {
			ly.routing.random = make([]F, N)
		}
		act.blockIn = make([]F, n*D)
		if ly.predictor {
			ly.pred = predictorActs[F]{fc: make([]F, N*P), fcGelu: make([]F, N*P), fcTanh: make([]F, N*P), logits: make([]F, N)}
		}
	}
	act.pos = make([]int32, n)
	if !ly.routed {
		for i := range act.pos {
			act.pos[i] = int32(i % T)
		}
	}
	act.ln1, act.ln1Rstd = make([]F, n*D), make([]F, n)
	act.qkv = make([]F, n*3*D)
	act.q, act.k, act.v = make([]F, n*D), make([]F, n*D), make([]F, n*D)
	act.probs = make([]F, B*H*s*s)
	act.heads, act.attnY, act.attn, act.resid = make([]F, n*D), make([]F, n*D), make([]F, n*D), make([]F, n*D)
	act.ln2, act.ln2Rstd = make([]F, n*D), make([]F, n)
	act.fc, act.fcGelu, act.fcTanh, act.mlp = make([]F, n*Fh), make([]F, n*Fh), make([]F, n*Fh), make([]F, n*D)
}

// plan builds every product of the layer once its input buffer is known;
// the formulas are on layerPlans' fields and where each product runs.
func (ly *layer[F]) plan(m *Model[F]) {
	m.allocScratch()
	cfg, sc := m.cfg, m.scratch
	B, D, Fh, H, hd := m.batch, cfg.DModel, cfg.MLPHidden, cfg.Heads, cfg.HeadDim()
	N, n, s, P := m.batch*cfg.SeqLen, ly.tokens, ly.seqTokens, cfg.PredictorHidden
	w, dw, act, d, pl := &ly.param, &ly.grad, &ly.act, &ly.d, &ly.plans
	if !ly.routed {
		act.blockIn = ly.in
	}
	d.out, d.in = m.gradBuf(ly.index+1), m.gradBuf(ly.index)
	if ly.routed {
		d.skip, d.block, d.blockIn = sc.skip[:n*D], sc.block[:n*D], sc.blockIn[:n*D]
	} else {
		// out = blockIn + f: both the skip path and f see d.out, and
		// blockIn is the layer input.
		d.skip, d.block, d.blockIn = d.out, d.out, d.in
	}

	pl.qkv = planMatMul(act.ln1, false, w.wqkv, false, act.qkv, n, D, 3*D)
	pl.attn = planMatMul(act.attnY, false, w.wo, false, act.attn, n, D, D)
	pl.fc = planMatMul(act.ln2, false, w.w1, false, act.fc, n, D, Fh)
	pl.mlp = planMatMul(act.fcGelu, false, w.w2, false, act.mlp, n, Fh, D)

	pl.dFcGelu = planMatMul(d.block, false, w.w2, true, sc.dFcGelu, n, D, Fh)
	pl.dW2 = planMatMul(act.fcGelu, true, d.block, false, dw.w2, Fh, n, D)
	pl.dW1 = planMatMul(act.ln2, true, sc.dFc, false, dw.w1, D, n, Fh)
	pl.dLn2 = planMatMul(sc.dFc, false, w.w1, true, sc.dLn2, n, Fh, D)
	pl.dAttnY = planMatMul(sc.dAttn, false, w.wo, true, sc.dAttnY, n, D, D)
	pl.dWo = planMatMul(act.attnY, true, sc.dAttn, false, dw.wo, D, n, D)
	pl.dWqkv = planMatMul(act.ln1, true, sc.dqkv, false, dw.wqkv, D, n, 3*D)
	pl.dLn1 = planMatMul(sc.dqkv, false, w.wqkv, true, sc.dLn1, n, 3*D, D)
	if ly.predictor {
		pl.predFc = planMatMul(ly.in, false, w.predW1, false, ly.pred.fc, N, D, P)
		pl.dPredW1 = planMatMul(ly.in, true, sc.dPredFc, false, dw.predW1, D, N, P)
	}

	nb := causalBlocks(s, m.attnBlock)
	pl.attnBlocks = nb
	pl.scores, pl.heads = make([]matmul, B*H*nb), make([]matmul, B*H*nb)
	pl.dProbs, pl.dv = make([]matmul, B*H*nb), make([]matmul, B*H*nb)
	pl.dq, pl.dk = make([]matmul, B*H*nb), make([]matmul, B*H*nb)
	for bh := 0; bh < B*H; bh++ {
		ho, po := bh*s*hd, bh*s*s // offsets of this head's [s,hd] and [s,s] blocks
		q, k, v := act.q[ho:ho+s*hd], act.k[ho:ho+s*hd], act.v[ho:ho+s*hd]
		probs, heads := act.probs[po:po+s*s], act.heads[ho:ho+s*hd]
		dHeads, dq, dk, dv := sc.dHeads[ho:ho+s*hd], sc.dq[ho:ho+s*hd], sc.dk[ho:ho+s*hd], sc.dv[ho:ho+s*hd]
		dProbs := sc.dProbs[po : po+s*s]
		for r := 0; r < nb; r++ {
			// Rows lo..hi of the [s,s] matrices, or columns for the
			// products that read them transposed. Rows need the columns
			// 0..hi, columns the rows lo..s.
			lo, hi := r*m.attnBlock, min(s, (r+1)*m.attnBlock)
			if nb == 1 {
				lo, hi = 0, s
			}
			rows, tail, i := hi-lo, s-lo, bh*nb+r
			pl.scores[i] = planMatMulStrided(q[lo*hd:], false, hd, k, true, hd, probs[lo*s:], s, rows, hd, hi)
			pl.heads[i] = planMatMulStrided(probs[lo*s:], false, s, v, false, hd, heads[lo*hd:], hd, rows, hi, hd)
			pl.dProbs[i] = planMatMulStrided(dHeads[lo*hd:], false, hd, v, true, hd, dProbs[lo*s:], s, rows, hd, hi)
			pl.dv[i] = planMatMulStrided(probs[lo*s+lo:], true, s, dHeads[lo*hd:], false, hd, dv[lo*hd:], hd, rows, tail, hd)
			pl.dq[i] = planMatMulStrided(dProbs[lo*s:], false, s, k, false, hd, dq[lo*hd:], hd, rows, hi, hd)
			pl.dk[i] = planMatMulStrided(dProbs[lo*s+lo:], true, s, q[lo*hd:], false, hd, dk[lo*hd:], hd, rows, tail, hd)
		}
	}
	pl.attnForwardFLOPs = headFLOPs(pl.scores) + headFLOPs(pl.heads)
	pl.attnBackwardFLOPs = headFLOPs(pl.dProbs) + headFLOPs(pl.dv) + headFLOPs(pl.dq) + headFLOPs(pl.dk)
}

// forward computes ly.out from ly.in.
func (ly *layer[F]) forward(m *Model[F]) {
	act := &ly.act
	if ly.routed {
		ly.route(m) // fills blockIn and pos
		m.clock.lap(OpRouting, 0, 0)
	}
	ly.attentionForward(m)
	residualForward(act.resid, act.blockIn, act.attn)
	m.clock.lap(OpOther, 0, 0)
	ly.mlpForward(m)
	if ly.routed {
		ly.routedOutputForward(m)
		m.clock.lap(OpRouting, 0, 0)
	} else {
		residualForward(ly.out, act.resid, act.mlp)
		m.clock.lap(OpOther, 0, 0)
	}
}

// headFLOPs is the work of a list of per-head products.
func headFLOPs(ps []matmul) float64 {
	var f float64
	for i := range ps {
		f += ps[i].flops()
	}
	return f
}

// attentionForward computes attn from blockIn: causal multi-head
// self-attention among the processed tokens, at their original positions.
func (ly *layer[F]) attentionForward(m *Model[F]) {
	cfg, act, pl := m.cfg, &ly.act, &ly.plans
	B, D, H, hd := m.batch, cfg.DModel, cfg.Heads, cfg.HeadDim()
	n, s := ly.tokens, ly.seqTokens
	es := elemBytes[F]()
	rmsnormForward(act.ln1, act.ln1Rstd, act.blockIn, ly.param.ln1, n, D, cfg.NormEps)
	m.clock.lap(OpNormGeluRoPE, 0, 2*n*D*es)
	pl.qkv.run() // qkv = ln1 · Wqkv
	m.clock.lap(OpMatmul, pl.qkv.flops(), 0)
	splitHeads(act.q, act.k, act.v, act.qkv, act.pos, B, s, H, hd, m.cos, m.sin)
	m.clock.lap(OpNormGeluRoPE, 0, 6*n*D*es)
	scale := F(1 / math.Sqrt(float64(hd)))
	nb := pl.attnBlocks
	for bh := 0; bh < B*H; bh++ {
		for i := bh * nb; i < (bh+1)*nb; i++ {
			pl.scores[i].run() // probs = q · kᵀ, up to the diagonal block
		}
		causalSoftmax(act.probs[bh*s*s:(bh+1)*s*s], s, scale)
		for i := bh * nb; i < (bh+1)*nb; i++ {
			pl.heads[i].run() // heads = probs · v
		}
	}
	mergeHeads(act.attnY, act.heads, B, s, H, hd)
	m.clock.lap(OpAttention, pl.attnForwardFLOPs, 0)
	pl.attn.run() // attn = attnY · Wo
	m.clock.lap(OpMatmul, pl.attn.flops(), 0)
}

// mlpForward computes mlp from resid.
func (ly *layer[F]) mlpForward(m *Model[F]) {
	cfg, act, pl := m.cfg, &ly.act, &ly.plans
	es := elemBytes[F]()
	rmsnormForward(act.ln2, act.ln2Rstd, act.resid, ly.param.ln2, ly.tokens, cfg.DModel, cfg.NormEps)
	m.clock.lap(OpNormGeluRoPE, 0, 2*ly.tokens*cfg.DModel*es)
	pl.fc.run() // fc = ln2 · W1
	m.clock.lap(OpMatmul, pl.fc.flops(), 0)
	geluForward(act.fcGelu, act.fcTanh, act.fc)
	m.clock.lap(OpNormGeluRoPE, 0, 3*len(act.fc)*es)
	pl.mlp.run() // mlp = fcGelu · W2
	m.clock.lap(OpMatmul, pl.mlp.flops(), 0)
}

// routedOutputForward writes in_i + r_i·f_i for the selected tokens and
// in_i for all others. f = attn + mlp is the block's residual delta, without
// blockIn, so the residual is counted once.
func (ly *layer[F]) routedOutputForward(m *Model[F]) {
	T, D := m.cfg.SeqLen, m.cfg.DModel
	s, rt, act := ly.seqTokens, &ly.routing, &ly.act
	copy(ly.out, ly.in)
	for j := 0; j < ly.tokens; j++ {
		b := j / s
		if j-b*s >= rt.count[b] {
			continue // an empty slot of causal routing
		}
		t := b*T + int(rt.selected[j])
		r := rt.weight[j]
		dst, attn, mlp := ly.out[t*D:(t+1)*D], act.attn[j*D:(j+1)*D], act.mlp[j*D:(j+1)*D]
		for c := range dst {
			dst[c] += r * (attn[c] + mlp[c])
		}
	}
}

// route computes the router logits, selects the tokens — exactly k per
// sequence by top-k, or those the causal decision admits — gathers them,
// and evaluates the causal-decision loss.
func (ly *layer[F]) route(m *Model[F]) {
	cfg := m.cfg
	B, T, D := m.batch, cfg.SeqLen, cfg.DModel
	N, s := B*T, ly.seqTokens
	rt, act := &ly.routing, &ly.act
	for t := 0; t < N; t++ {
		var acc F
		xr := ly.in[t*D : (t+1)*D]
		for c, w := range ly.param.router {
			acc += xr[c] * w
		}
		rt.logits[t] = acc
	}
	// decision admits a token under causal routing; rank orders the top-k.
	decision, rank := rt.logits, rt.logits
	if ly.predictor {
		ly.predict(m)
		decision = ly.pred.logits
	}
	if ly.random {
		ly.randomScores(m)
		decision, rank = rt.random, rt.random
	}
	clear(rt.target)
	for b := 0; b < B; b++ {
		z, score := rt.logits[b*T:(b+1)*T], rank[b*T:(b+1)*T]
		sel := rt.selected[b*s : (b+1)*s]
		var count int
		switch {
		case m.causal:
			// Each token decides from its own decision logit: no future needed.
			for t, v := range decision[b*T : (b+1)*T] {
				if v > 0 {
					sel[count] = int32(t)
					count++
				}
			}
		default:
			order := rt.order
			for i := range order {
				order[i] = int32(i)
			}
			if !m.forceAllWeightOne {
				// Highest logit first; ties go to the earlier position, so the
				// choice is deterministic.
				slices.SortFunc(order, func(i, j int32) int {
					switch {
					case score[i] > score[j]:
						return -1
					case score[i] < score[j]:
						return 1
					}
					return int(i - j)
				})
			}
			count = s
			copy(sel, order[:s])
			slices.Sort(sel) // original order, so the causal mask is the plain one
		}
		rt.count[b] = count
		for j, t := range sel[:count] {
			row, slot := b*T+int(t), b*s+j
			rt.target[row] = 1
			act.pos[slot] = t
			copy(act.blockIn[slot*D:(slot+1)*D], ly.in[row*D:(row+1)*D])
			if m.forceAllWeightOne {
				rt.weight[slot] = 1
			} else {
				rt.weight[slot] = sigmoid(z[t])
			}
		}
		// Empty slots (causal routing only) sit after the real tokens, so the
		// causal mask keeps them out of the real tokens' attention.
		for j := count; j < s; j++ {
			slot := b*s + j
			sel[j], act.pos[slot], rt.weight[slot] = 0, 0, 0
			clear(act.blockIn[slot*D : (slot+1)*D])
		}
	}
	if m.causal || ly.random {
		rt.bce = 0 // random routing has no decision to train
		return
	}
	// Causal-decision loss: BCE of the decision logits against top-k membership.
	var sum float64
	for t := 0; t < N; t++ {
		sum += bceWithLogits(float64(decision[t]), float64(rt.target[t]))
	}
	rt.bce = sum / float64(N)
}

// predict computes the predictor's logits from the layer input.
func (ly *layer[F]) predict(m *Model[F]) {
	N, P := m.batch*m.cfg.SeqLen, m.cfg.PredictorHidden
	w, pr := &ly.param, &ly.pred
	ly.plans.predFc.run() // pred.fc = in · predW1
	for t := 0; t < N; t++ {
		add(pr.fc[t*P:(t+1)*P], w.predB1)
	}
	geluForward(pr.fcGelu, pr.fcTanh, pr.fc)
	for t := 0; t < N; t++ {
		var acc F
		for c, v := range w.predW2 {
			acc += pr.fcGelu[t*P+c] * v
		}
		pr.logits[t] = acc + w.predB2[0]
	}
}

// backward computes d.in and the layer's parameter gradients from d.out.
func (ly *layer[F]) backward(m *Model[F]) {
	if ly.routed {
		ly.routedOutputBackward(m)
		m.clock.lap(OpRouting, 0, 0)
	}
	ly.mlpBackward(m)
	// resid = blockIn + attn and f = attn + mlp: attn's gradient comes from
	// f and resid, blockIn's from the skip path and resid.
	sc, d := m.scratch, &ly.d
	nD := ly.tokens * m.cfg.DModel
	dResid, dAttn := sc.dResid[:nD], sc.dAttn[:nD]
	for i := range dAttn {
		dAttn[i] = d.block[i] + dResid[i]
		d.blockIn[i] = d.skip[i] + dResid[i]
	}
	m.clock.lap(OpOther, 0, 0)
	ly.attentionBackward(m)
	if !ly.routed {
		return // d.blockIn is d.in
	}
	T, D, s := m.cfg.SeqLen, m.cfg.DModel, ly.seqTokens
	for j := 0; j < ly.tokens; j++ {
		t := (j/s)*T + int(ly.routing.selected[j])
		copy(d.in[t*D:(t+1)*D], d.blockIn[j*D:(j+1)*D])
	}
	ly.routerBackward(m)
	m.clock.lap(OpRouting, 0, 0)
}

// routedOutputBackward differentiates out_t = in_t + r·f for the selected
// t: the residual passes d.out through, f gets r·d.out, and r = σ(z) gets
// d.out·f, which it hands on to z.
func (ly *layer[F]) routedOutputBackward(m *Model[F]) {
	T, D := m.cfg.SeqLen, m.cfg.DModel
	s, rt, act, d := ly.seqTokens, &ly.routing, &ly.act, &ly.d
	dz := m.scratch.dLogits
	copy(d.in, d.out)
	clear(dz)
	for j := 0; j < ly.tokens; j++ {
		b := j / s
		t := b*T + int(rt.selected[j])
		r := rt.weight[j]
		dy := d.out[t*D : (t+1)*D]
		attn, mlp := act.attn[j*D:(j+1)*D], act.mlp[j*D:(j+1)*D]
		skip, block := d.skip[j*D:(j+1)*D], d.block[j*D:(j+1)*D]
		var dr F
		for c := range dy {
			dr += dy[c] * (attn[c] + mlp[c])
			skip[c] = dy[c]
			block[c] = r * dy[c]
		}
		if !m.forceAllWeightOne {
			dz[t] = dr * r * (1 - r)
		}
	}
}

// mlpBackward takes d.block, the gradient of mlp, back to dResid.
func (ly *layer[F]) mlpBackward(m *Model[F]) {
	cfg, sc, act, pl := m.cfg, m.scratch, &ly.act, &ly.plans
	n, D, nF := ly.tokens, cfg.DModel, ly.tokens*cfg.MLPHidden
	es := elemBytes[F]()
	pl.dFcGelu.run() // dFcGelu = dBlock · W2ᵀ
	pl.dW2.run()     // dW2 = fcGeluᵀ · dBlock
	m.clock.lap(OpMatmul, pl.dFcGelu.flops()+pl.dW2.flops(), 0)
	geluBackward(sc.dFc[:nF], sc.dFcGelu[:nF], act.fc, act.fcTanh)
	m.clock.lap(OpNormGeluRoPE, 0, 4*nF*es)
	pl.dW1.run()  // dW1 = ln2ᵀ · dFc
	pl.dLn2.run() // dLn2 = dFc · W1ᵀ
	m.clock.lap(OpMatmul, pl.dW1.flops()+pl.dLn2.flops(), 0)
	dResid := sc.dResid[:n*D]
	clear(dResid) // rmsnormBackward accumulates
	rmsnormBackward(dResid, ly.grad.ln2, sc.dLn2, act.resid, act.ln2Rstd, ly.param.ln2, n, D)
	m.clock.lap(OpNormGeluRoPE, 0, 5*n*D*es)
}

// attentionBackward takes dAttn back to blockIn, adding to d.blockIn.
func (ly *layer[F]) attentionBackward(m *Model[F]) {
	cfg, sc, act, pl := m.cfg, m.scratch, &ly.act, &ly.plans
	B, D, H, hd := m.batch, cfg.DModel, cfg.Heads, cfg.HeadDim()
	n, s := ly.tokens, ly.seqTokens
	es := elemBytes[F]()
	pl.dAttnY.run() // dAttnY = dAttn · Woᵀ
	pl.dWo.run()    // dWo = attnYᵀ · dAttn
	m.clock.lap(OpMatmul, pl.dAttnY.flops()+pl.dWo.flops(), 0)
	splitHeadsPlain(sc.dHeads, sc.dAttnY, B, s, H, hd)
	scale := F(1 / math.Sqrt(float64(hd)))
	nb := pl.attnBlocks
	for bh := 0; bh < B*H; bh++ {
		for i := bh * nb; i < (bh+1)*nb; i++ {
			pl.dProbs[i].run() // dProbs = dHeads · vᵀ
			pl.dv[i].run()     // dv = probsᵀ · dHeads
		}
		// dProbs becomes dScores, the gradient wrt q·kᵀ, in place.
		causalSoftmaxBackward(sc.dProbs[bh*s*s:(bh+1)*s*s], act.probs[bh*s*s:(bh+1)*s*s], s, scale)
		for i := bh * nb; i < (bh+1)*nb; i++ {
			pl.dq[i].run() // dq = dScores · k
			pl.dk[i].run() // dk = dScoresᵀ · q
		}
	}
	m.clock.lap(OpAttention, pl.attnBackwardFLOPs, 0)
	mergeQKVGrad(sc.dqkv, sc.dq, sc.dk, sc.dv, act.pos, B, s, H, hd, m.cos, m.sin)
	m.clock.lap(OpNormGeluRoPE, 0, 6*n*D*es)
	pl.dWqkv.run() // dWqkv = ln1ᵀ · dqkv
	pl.dLn1.run()  // dLn1 = dqkv · Wqkvᵀ
	m.clock.lap(OpMatmul, pl.dWqkv.flops()+pl.dLn1.flops(), 0)
	rmsnormBackward(ly.d.blockIn, ly.grad.ln1, sc.dLn1, act.blockIn, act.ln1Rstd, ly.param.ln1, n, D)
	m.clock.lap(OpNormGeluRoPE, 0, 4*n*D*es)
}

// routerBackward adds the causal-decision loss's gradient and takes the
// router logits' gradient back through z = in · router.
func (ly *layer[F]) routerBackward(m *Model[F]) {
	cfg, rt, d := m.cfg, &ly.routing, &ly.d
	N, D := m.batch*cfg.SeqLen, cfg.DModel
	dz := m.scratch.dLogits
	lam := F(cfg.AuxLossWeight / float64(N))
	switch {
	case ly.random: // no causal-decision loss
	case !ly.predictor:
		for t := 0; t < N; t++ {
			dz[t] += lam * (sigmoid(rt.logits[t]) - rt.target[t])
		}
	default:
		ly.predictorBackward(m, lam)
	}
	for t := 0; t < N; t++ {
		g := dz[t]
		if g == 0 {
			continue
		}
		xr, dxr := ly.in[t*D:(t+1)*D], d.in[t*D:(t+1)*D]
		for c, w := range ly.param.router {
			dxr[c] += g * w
			ly.grad.router[c] += g * xr[c]
		}
	}
}

// predictorBackward trains the predictor only: its input is stop-gradient.
func (ly *layer[F]) predictorBackward(m *Model[F], lam F) {
	cfg := m.cfg
	N, P := m.batch*cfg.SeqLen, cfg.PredictorHidden
	w, dw, pr := &ly.param, &ly.grad, &ly.pred
	dPredFc := m.scratch.dPredFc[:N*P]
	for t := 0; t < N; t++ {
		dLogit := lam * (sigmoid(pr.logits[t]) - ly.routing.target[t])
		dw.predB2[0] += dLogit
		fcGelu, fc, fcTanh, dfc := pr.fcGelu[t*P:(t+1)*P], pr.fc[t*P:(t+1)*P], pr.fcTanh[t*P:(t+1)*P], dPredFc[t*P:(t+1)*P]
		for c := range fcGelu {
			dw.predW2[c] += dLogit * fcGelu[c]
			dfc[c] = dLogit * w.predW2[c]
		}
		geluBackward(dfc, dfc, fc, fcTanh)
		add(dw.predB1, dfc)
	}
	ly.plans.dPredW1.run() // dPredW1 = inᵀ · dPredFc
}

// residualForward sets out = a + b.
func residualForward[F Float](out, a, b []F) {
	for i := range out {
		out[i] = a[i] + b[i]
	}
}

// splitHeads copies q, k, v out of qkv [n,3D] into head-major [B,H,s,hd]
// buffers, rotating q and k by their tokens' original positions (RoPE).
func splitHeads[F Float](qh, kh, vh, qkv []F, pos []int32, B, s, H, hd int, cos, sin []F) {
	D := H * hd
	half := hd / 2
	for b := 0; b < B; b++ {
		for i := 0; i < s; i++ {
			row := qkv[(b*s+i)*3*D : (b*s+i+1)*3*D]
			for h := 0; h < H; h++ {
				dst := ((b*H+h)*s + i) * hd
				q, k := qh[dst:dst+hd], kh[dst:dst+hd]
				copy(q, row[h*hd:(h+1)*hd])
				copy(k, row[D+h*hd:D+(h+1)*hd])
				copy(vh[dst:dst+hd], row[2*D+h*hd:2*D+(h+1)*hd])
				if cos != nil {
					p := int(pos[b*s+i]) * half
					rotate(q, cos[p:p+half], sin[p:p+half], 1)
					rotate(k, cos[p:p+half], sin[p:p+half], 1)
				}
			}
		}
	}
}

// rotate applies RoPE's rotate-half to one head vector; sign −1 inverts it.
func rotate[F Float](v, cos, sin []F, sign F) {
	half := len(v) / 2
	for j := 0; j < half; j++ {
		a, b := v[j], v[j+half]
		v[j] = a*cos[j] - sign*b*sin[j]
		v[j+half] = sign*a*sin[j] + b*cos[j]
	}
}

// mergeHeads writes head-major oh [B,H,s,hd] as token-major o [n,D].
func mergeHeads[F Float](o, oh []F, B, s, H, hd int) {
	D := H * hd
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for i := 0; i < s; i++ {
				src := ((b*H+h)*s + i) * hd
				copy(o[(b*s+i)*D+h*hd:(b*s+i)*D+(h+1)*hd], oh[src:src+hd])
			}
		}
	}
}

// splitHeadsPlain is mergeHeads' inverse: token-major [n,D] to head-major.
func splitHeadsPlain[F Float](xh, x []F, B, s, H, hd int) {
	D := H * hd
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			for i := 0; i < s; i++ {
				dst := ((b*H+h)*s + i) * hd
				copy(xh[dst:dst+hd], x[(b*s+i)*D+h*hd:(b*s+i)*D+(h+1)*hd])
			}
		}
	}
}

// mergeQKVGrad is splitHeads' backward: it writes the head-major gradients
// of q, k, v into dqkv [n,3D], undoing the RoPE rotation of q and k.
func mergeQKVGrad[F Float](dqkv, dqh, dkh, dvh []F, pos []int32, B, s, H, hd int, cos, sin []F) {
	D := H * hd
	half := hd / 2
	for b := 0; b < B; b++ {
		for i := 0; i < s; i++ {
			row := dqkv[(b*s+i)*3*D : (b*s+i+1)*3*D]
			for h := 0; h < H; h++ {
				src := ((b*H+h)*s + i) * hd
				dq, dk := row[h*hd:(h+1)*hd], row[D+h*hd:D+(h+1)*hd]
				copy(dq, dqh[src:src+hd])
				copy(dk, dkh[src:src+hd])
				copy(row[2*D+h*hd:2*D+(h+1)*hd], dvh[src:src+hd])
				if cos != nil {
					p := int(pos[b*s+i]) * half
					rotate(dq, cos[p:p+half], sin[p:p+half], -1)
					rotate(dk, cos[p:p+half], sin[p:p+half], -1)
				}
			}
		}
	}
}
