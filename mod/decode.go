package mod

import (
	"fmt"
	"math"
)

// Decoder generates autoregressively with a KV cache, routing each new
// token by the learned causal decision. A routed layer's cache holds only
// the tokens that went through that layer: a skipped token writes no key or
// value there and is never attended to, which is where MoD saves memory and
// time at inference. Each row of a batch routes by its own decisions.
type Decoder[F Float] struct {
	cfg    Config
	layout *Layout
	params []F
	batch  int
	pos    int // tokens consumed per row so far
	layers []decoderLayer[F]
	cos    []F
	sin    []F

	x, u, qkv, o, a, h, hid, th, mo []F // per-row scratch, [batch, ·]
	scores                          []F // [T]
	logits                          []F // [batch, V]
	active                          []int
	w                               []F // router weight of each active row
}

type decoderLayer[F Float] struct {
	routed, predictor bool
	off               layerOffsets
	// Per row: the cached keys (rotated) and values, [count, D] each, and
	// the original positions of the cached tokens.
	k, v [][]F
	// Routing statistics since Reset.
	seen, taken int
}

// NewDecoder prepares a decoder for batch rows over the given parameters
// (not copied). Sequences may grow to cfg.SeqLen tokens.
func NewDecoder[F Float](cfg Config, batch int, params []F) (*Decoder[F], error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("model config: %w", err)
	}
	if cfg.RandomRouting() && len(cfg.RoutedLayers) > 0 {
		// The control is for training comparisons; the cache would need the
		// per-row hash state of routing_random.go.
		return nil, fmt.Errorf("model config: routing %q is a training control; sampling supports routing %q only", cfg.Routing, RoutingLearned)
	}
	if batch < 1 || batch > 4096 {
		return nil, fmt.Errorf("decoder batch %d is out of range; use 1..4096", batch)
	}
	l := NewLayout(cfg)
	if len(params) != l.Total {
		return nil, fmt.Errorf("parameter vector has %d values, config needs %d", len(params), l.Total)
	}
	D, Fh, V, B := cfg.DModel, cfg.MLPHidden, cfg.Vocab, batch
	d := &Decoder[F]{
		cfg: cfg, layout: l, params: params, batch: batch,
		x: make([]F, B*D), u: make([]F, B*D), qkv: make([]F, B*3*D), o: make([]F, B*D),
		a: make([]F, B*D), h: make([]F, B*D), hid: make([]F, B*Fh), th: make([]F, B*Fh), mo: make([]F, B*D),
		scores: make([]F, cfg.SeqLen), logits: make([]F, B*V),
		active: make([]int, 0, B), w: make([]F, B),
	}
	if cfg.Positions == PositionsRoPE {
		d.cos, d.sin = ropeTables[F](cfg.SeqLen, cfg.HeadDim(), cfg.RoPETheta)
	}
	d.layers = make([]decoderLayer[F], cfg.Layers)
	for i := range d.layers {
		o := l.layer(i, cfg)
		d.layers[i] = decoderLayer[F]{routed: o.routed, predictor: o.predictor, off: o,
			k: make([][]F, B), v: make([][]F, B)}
	}
	return d, nil
}

// Reset empties the caches for a new batch of sequences.
func (d *Decoder[F]) Reset() {
	d.pos = 0
	for i := range d.layers {
		ly := &d.layers[i]
		for b := range ly.k {
			ly.k[b], ly.v[b] = ly.k[b][:0], ly.v[b][:0]
		}
		ly.seen, ly.taken = 0, 0
	}
}

// Len is the number of tokens each row has consumed.
func (d *Decoder[F]) Len() int { return d.pos }

// KVBytes is the memory the caches hold: keys and values of every cached
// token in every layer, at the element size of F.
func (d *Decoder[F]) KVBytes() int {
	var elems int
	for i := range d.layers {
		for b := range d.layers[i].k {
			elems += len(d.layers[i].k[b]) + len(d.layers[i].v[b])
		}
	}
	var zero F
	return elems * int(sizeOf(zero))
}

// RoutedFraction is, per layer, the fraction of tokens that went through it
// since Reset (1 for dense layers).
func (d *Decoder[F]) RoutedFraction() []float64 {
	out := make([]float64, len(d.layers))
	for i, ly := range d.layers {
		out[i] = 1
		if ly.routed && ly.seen > 0 {
			out[i] = float64(ly.taken) / float64(ly.seen)
		}
	}
	return out
}

func (d *Decoder[F]) p(off, size int) []F { return d.params[off : off+size] }

// Step feeds one token per row (tokens [batch]) and returns the logits for
// the next token, [batch, V]; the slice is reused by the next Step.
func (d *Decoder[F]) Step(tokens []int32) ([]F, error) {
	cfg := d.cfg
	B, D, V, T := d.batch, cfg.DModel, cfg.Vocab, cfg.SeqLen
	if len(tokens) != B {
		return nil, fmt.Errorf("decode: got %d tokens, want one per row (%d)", len(tokens), B)
	}
	if d.pos >= T {
		return nil, fmt.Errorf("decode: sequence is full at seq_len %d tokens", T)
	}
	emb := d.p(d.layout.offset("tok_emb"), V*D)
	var pos []F
	if o := d.layout.offset("pos_emb"); o >= 0 {
		pos = d.p(o+d.pos*D, D)
	}
	for b, t := range tokens {
		if t < 0 || int(t) >= V {
			return nil, fmt.Errorf("decode: token %d of row %d is outside the vocabulary [0,%d)", t, b, V)
		}
		copy(d.x[b*D:(b+1)*D], emb[int(t)*D:int(t+1)*D])
		if pos != nil {
			add(d.x[b*D:(b+1)*D], pos)
		}
	}
	for i := range d.layers {
		d.layerStep(&d.layers[i])
	}
	lnf := d.p(d.layout.offset("ln_f"), D)
	rmsnormForward(d.u[:B*D], d.h[:B], d.x, lnf, B, D, cfg.NormEps)
	head := d.p(d.layout.offset("lm_head"), D*V)
	mm := planMatMul(d.u[:B*D], false, head, false, d.logits, B, D, V)
	mm.run()
	d.pos++
	return d.logits, nil
}

// layerStep runs one layer for the rows that take part in it.
func (d *Decoder[F]) layerStep(ly *decoderLayer[F]) {
	cfg := d.cfg
	B, D, Fh, H, hd := d.batch, cfg.DModel, cfg.MLPHidden, cfg.Heads, cfg.HeadDim()
	o := ly.off
	d.active = d.active[:0]
	for b := 0; b < B; b++ {
		if !ly.routed {
			d.active = append(d.active, b)
			continue
		}
		x := d.x[b*D : (b+1)*D]
		z := dotF(x, d.p(o.router, D))
		decision := z
		if ly.predictor {
			decision = d.predictorLogit(o, x)
		}
		ly.seen++
		if decision > 0 {
			d.w[len(d.active)] = sigmoid(z)
			d.active = append(d.active, b)
			ly.taken++
		}
	}
	n := len(d.active)
	if n == 0 {
		return // every row skips this layer: nothing is computed or cached
	}
	// Gather the active rows' inputs into u (normalised) and keep x in a.
	inv := d.h[:n] // scratch for 1/rms
	for j, b := range d.active {
		copy(d.a[j*D:(j+1)*D], d.x[b*D:(b+1)*D])
	}
	rmsnormForward(d.u[:n*D], inv, d.a[:n*D], d.p(o.ln1, D), n, D, cfg.NormEps)
	mm := planMatMul(d.u[:n*D], false, d.p(o.wqkv, 3*D*D), false, d.qkv[:n*3*D], n, D, 3*D)
	mm.run()
	half := hd / 2
	scale := F(1 / math.Sqrt(float64(hd)))
	for j, b := range d.active {
		row := d.qkv[j*3*D : (j+1)*3*D]
		q, k, v := row[:D], row[D:2*D], row[2*D:]
		if d.cos != nil {
			c, s := d.cos[d.pos*half:(d.pos+1)*half], d.sin[d.pos*half:(d.pos+1)*half]
			for h := 0; h < H; h++ {
				rotate(q[h*hd:(h+1)*hd], c, s, 1)
				rotate(k[h*hd:(h+1)*hd], c, s, 1)
			}
		}
		ly.k[b] = append(ly.k[b], k...)
		ly.v[b] = append(ly.v[b], v...)
		// Attention over this layer's cache of row b, which ends with this token.
		keys, vals := ly.k[b], ly.v[b]
		cnt := len(keys) / D
		out := d.o[j*D : (j+1)*D]
		for h := 0; h < H; h++ {
			qh := q[h*hd : (h+1)*hd]
			sc := d.scores[:cnt]
			mx := F(math.Inf(-1))
			for i := 0; i < cnt; i++ {
				sc[i] = dotF(qh, keys[i*D+h*hd:i*D+(h+1)*hd]) * scale
				mx = max(mx, sc[i])
			}
			var sum F
			for i := range sc {
				sc[i] = exp(sc[i] - mx)
				sum += sc[i]
			}
			oh := out[h*hd : (h+1)*hd]
			clear(oh)
			for i, p := range sc {
				p /= sum
				vh := vals[i*D+h*hd : i*D+(h+1)*hd]
				for c := range oh {
					oh[c] += p * vh[c]
				}
			}
		}
	}
	// a = o·wo (into u), h = x + a, MLP on ln2(h).
	mm = planMatMul(d.o[:n*D], false, d.p(o.wo, D*D), false, d.u[:n*D], n, D, D)
	mm.run()
	attn := d.u[:n*D]
	for i := range attn {
		d.a[i] += attn[i] // a now holds h = x + attn
	}
	rmsnormForward(d.mo[:n*D], inv, d.a[:n*D], d.p(o.ln2, D), n, D, cfg.NormEps)
	mm = planMatMul(d.mo[:n*D], false, d.p(o.w1, D*Fh), false, d.hid[:n*Fh], n, D, Fh)
	mm.run()
	geluForward(d.hid[:n*Fh], d.th[:n*Fh], d.hid[:n*Fh])
	mm = planMatMul(d.hid[:n*Fh], false, d.p(o.w2, Fh*D), false, d.mo[:n*D], n, Fh, D)
	mm.run()
	for j, b := range d.active {
		x := d.x[b*D : (b+1)*D]
		at, ml := attn[j*D:(j+1)*D], d.mo[j*D:(j+1)*D]
		w := F(1)
		if ly.routed {
			w = d.w[j]
		}
		for c := range x {
			x[c] += w * (at[c] + ml[c])
		}
	}
}

// predictorLogit evaluates the predictor MLP on one token's layer input.
func (d *Decoder[F]) predictorLogit(o layerOffsets, x []F) F {
	D, P := d.cfg.DModel, d.cfg.PredictorHidden
	w1, b1, w2 := d.p(o.predW1, D*P), d.p(o.predB1, P), d.p(o.predW2, P)
	acc := d.p(o.predB2, 1)[0]
	for c := 0; c < P; c++ {
		var hsum F = b1[c]
		for i := 0; i < D; i++ {
			hsum += x[i] * w1[i*P+c]
		}
		u := F(geluC) * (hsum + 0.044715*hsum*hsum*hsum)
		acc += 0.5 * hsum * (1 + tanh(u)) * w2[c]
	}
	return acc
}

func dotF[F Float](a, b []F) F {
	var s F
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}
