package mod

// FLOPs are counted analytically from the matrix products the model really
// runs: 2·m·n·k per product, forward and backward. Routed layers count only
// their k selected tokens per sequence, which is where MoD's savings come
// from. Elementwise work (norms, softmax, RoPE, GELU) is not counted, as is
// customary; it is O(T·D) per layer against the products' O(T·D²).
//
// Attention is counted in full, 2·s²·hd per product and head, although
// the causal mask zeroes the upper half: these are model FLOPs, the
// figure FLOP budgets and the isoFLOP comparison use, and they do not
// depend on how the kernels run. From s = 256 the kernels skip the masked
// blocks (see attnBlock) and execute fewer; Model.GEMMShapes lists what
// the products really execute, and `bench compute` holds that, not this,
// against the roofline.

// FLOPCount splits a step's FLOPs by where they are spent.
type FLOPCount struct {
	Forward  float64 `json:"forward"`
	Backward float64 `json:"backward"`
}

// Total is forward plus backward.
func (f FLOPCount) Total() float64 { return f.Forward + f.Backward }

// TrainFLOPs is the analytic FLOP count of one training step (forward and
// backward, routers and causal-decision head included) on batch sequences.
func (c Config) TrainFLOPs(batch int) FLOPCount {
	return c.flops(batch, func(int) float64 { return float64(c.TopK()) })
}

// ForwardFLOPsAtShare is the forward cost of one full sequence when routed
// layer RoutedLayers[i] processes share[i]·T tokens instead of k: the
// inference cost that causal routing, which admits a varying number of
// tokens, really implies. A missing share counts as C.
func (c Config) ForwardFLOPsAtShare(share []float64) float64 {
	idx := map[int]int{}
	for i, l := range c.RoutedLayers {
		idx[l] = i
	}
	return c.flops(1, func(l int) float64 {
		if i := idx[l]; i < len(share) {
			return share[i] * float64(c.SeqLen)
		}
		return float64(c.TopK())
	}).Forward
}

// flops counts a step in which routed layer l processes routedTokens(l)
// tokens per sequence.
func (c Config) flops(batch int, routedTokens func(l int) float64) FLOPCount {
	var f FLOPCount
	D, F, V, H := float64(c.DModel), float64(c.MLPHidden), float64(c.Vocab), float64(c.Heads)
	hd := D / H
	P := float64(c.PredictorHidden)
	B := float64(batch)
	N := B * float64(c.SeqLen)
	// mm adds a product of [m,k]·[k,n] that needs both input gradients.
	mm := func(m, k, n float64) {
		f.Forward += 2 * m * k * n
		f.Backward += 4 * m * k * n
	}
	for l := 0; l < c.Layers; l++ {
		s := float64(c.SeqLen)
		if c.IsRouted(l) {
			s = routedTokens(l)
			mm(N, D, 1) // router logits
			if c.Decision == DecisionPredictor {
				// Stop-gradient input: no input gradient for the first product.
				f.Forward += 2*N*D*P + 2*N*P
				f.Backward += 2*N*D*P + 4*N*P
			}
		}
		n := B * s
		mm(n, D, 3*D) // qkv
		// Per (sequence, head): scores = q·kᵀ [s,hd]·[hd,s] and out = p·v
		// [s,s]·[s,hd], each 2·s²·hd forward and twice that backward.
		f.Forward += B * H * 2 * (2 * s * s * hd)
		f.Backward += B * H * 4 * (2 * s * s * hd)
		mm(n, D, D) // output projection
		mm(n, D, F) // mlp up
		mm(n, F, D) // mlp down
	}
	mm(N, D, V) // lm head
	return f
}

// ForwardFLOPsPerToken is the forward cost of the model per token of a full
// sequence, as used to compare models at inference.
func (c Config) ForwardFLOPsPerToken() float64 {
	return c.TrainFLOPs(1).Forward / float64(c.SeqLen)
}
