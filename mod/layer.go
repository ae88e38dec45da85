package mod

import (
	"math"
	"slices"
)

// layer is one transformer block, dense or routed. A routed layer runs the
// block on only the k = floor(C·T) tokens of each sequence with the highest
// router logits, in their original order; every other token rides the
// residual stream unchanged and is neither a key nor a value here.
type layer[F Float] struct {
	index             int
	routed, predictor bool
	s, n              int // tokens per sequence and in all, that the block processes

	x, out []F // [N,D] layer input and output (residual stream)

	// Parameters and gradients (views into the flat vectors).
	ln1, wqkv, wo, ln2, w1, w2               []F
	dln1, dwqkv, dwo, dln2, dw1, dw2         []F
	router, predW1, predB1, predW2, predB2   []F
	drouter, dpredW1, dpredB1, dpredW2, dpB2 []F

	// Routing (routed layers only).
	z      []F     // [N] router logits
	sel    []int32 // [B,s] selected positions, ascending per sequence
	count  []int   // [B] tokens selected per sequence: k, or under causal routing as decided
	r      []F     // [B,k] router weights σ(z) of the selected tokens
	target []F     // [N] 1 where selected, else 0
	order  []int32 // [T] scratch for the top-k sort
	xs     []F     // [n,D] the selected tokens' inputs (aliases x when dense)
	bce    float64
	ph, pg []F // [N,P] predictor hidden pre/post GELU
	pth    []F // [N,P] tanh inside the predictor's GELU
	pl     []F // [N] predictor logits

	// Block activations kept for the backward pass.
	pos        []int32 // [n] original position of each processed token
	u1, inv1   []F     // ln1 output [n,D], 1/rms [n]
	qkv        []F     // [n,3D]
	qh, kh, vh []F     // [B,H,s,hd] head-major, q and k rotated
	p          []F     // [B,H,s,s] attention probabilities
	oh         []F     // [B,H,s,hd] attention output per head
	o          []F     // [n,D] heads merged
	a          []F     // [n,D] attention block output
	h          []F     // [n,D] xs + a
	u2, inv2   []F     // ln2 output, 1/rms
	hpre, g    []F     // [n,F] MLP hidden pre/post GELU
	th         []F     // [n,F] tanh inside GELU, kept for backward
	mo         []F     // [n,D] MLP output

	// Planned products.
	mmQKV, mmWo, mmW1, mmW2, mmPred        matmul
	mmScores, mmAV                         []matmul // per (b,h)
	mmDg, mmDw2, mmDw1, mmDu2, mmDo, mmDwo matmul
	mmDwqkv, mmDu1, mmDpredW1              matmul
	mmDp, mmDv, mmDq, mmDk                 []matmul // per (b,h)

	dOut, dIn []F // gradient wrt out and x (fixed buffers, see Model.gradBuf)
	dres, df  []F // gradient into the residual and into the block output f
	dxs       []F // gradient wrt xs
}

// scratch holds backward buffers shared by all layers (they run one at a
// time), sized for a dense layer.
type scratch[F Float] struct {
	dres, df, dxs        []F // [N,D] routed layers only
	dg, dhpre            []F // [N,F]
	du2, dh, da, do, du1 []F // [N,D]
	doh, dqh, dkh, dvh   []F // [N,D] head-major
	dqkv                 []F // [N,3D]
	dp                   []F // [B,H,T,T]
	dz                   []F // [N]
	dph                  []F // [N,P]
}

func (m *Model[F]) allocScratch() {
	if m.scr != nil {
		return
	}
	cfg := m.cfg
	N, D, Fh, T := m.batch*cfg.SeqLen, cfg.DModel, cfg.MLPHidden, cfg.SeqLen
	s := &scratch[F]{
		dres: make([]F, N*D), df: make([]F, N*D), dxs: make([]F, N*D),
		dg: make([]F, N*Fh), dhpre: make([]F, N*Fh),
		du2: make([]F, N*D), dh: make([]F, N*D), da: make([]F, N*D), do: make([]F, N*D), du1: make([]F, N*D),
		doh: make([]F, N*D), dqh: make([]F, N*D), dkh: make([]F, N*D), dvh: make([]F, N*D),
		dqkv: make([]F, N*3*D), dp: make([]F, m.batch*cfg.Heads*T*T), dz: make([]F, N),
		dph: make([]F, N*cfg.PredictorHidden),
	}
	m.scr = s
}

func (ly *layer[F]) alloc(m *Model[F], index int, out []F) {
	cfg := m.cfg
	B, T, D, Fh, H := m.batch, cfg.SeqLen, cfg.DModel, cfg.MLPHidden, cfg.Heads
	N := B * T
	o := m.layout.layer(index, cfg)
	ly.index, ly.routed, ly.predictor = index, o.routed, o.predictor
	ly.out = out
	ly.s = T
	if ly.routed && !m.causal {
		ly.s = cfg.TopK()
	}
	ly.n = B * ly.s
	n := ly.n
	view := func(v []F, off, size int) []F {
		if off < 0 {
			return nil
		}
		return v[off : off+size]
	}
	P := cfg.PredictorHidden
	ly.ln1, ly.dln1 = view(m.params, o.ln1, D), view(m.grads, o.ln1, D)
	ly.wqkv, ly.dwqkv = view(m.params, o.wqkv, 3*D*D), view(m.grads, o.wqkv, 3*D*D)
	ly.wo, ly.dwo = view(m.params, o.wo, D*D), view(m.grads, o.wo, D*D)
	ly.ln2, ly.dln2 = view(m.params, o.ln2, D), view(m.grads, o.ln2, D)
	ly.w1, ly.dw1 = view(m.params, o.w1, D*Fh), view(m.grads, o.w1, D*Fh)
	ly.w2, ly.dw2 = view(m.params, o.w2, Fh*D), view(m.grads, o.w2, Fh*D)
	if ly.routed {
		ly.router, ly.drouter = view(m.params, o.router, D), view(m.grads, o.router, D)
		ly.z, ly.target = make([]F, N), make([]F, N)
		ly.sel, ly.r = make([]int32, n), make([]F, n)
		ly.count = make([]int, B)
		ly.order = make([]int32, T)
		ly.xs = make([]F, n*D)
		if ly.predictor {
			ly.predW1, ly.dpredW1 = view(m.params, o.predW1, D*P), view(m.grads, o.predW1, D*P)
			ly.predB1, ly.dpredB1 = view(m.params, o.predB1, P), view(m.grads, o.predB1, P)
			ly.predW2, ly.dpredW2 = view(m.params, o.predW2, P), view(m.grads, o.predW2, P)
			ly.predB2, ly.dpB2 = view(m.params, o.predB2, 1), view(m.grads, o.predB2, 1)
			ly.ph, ly.pg, ly.pth, ly.pl = make([]F, N*P), make([]F, N*P), make([]F, N*P), make([]F, N)
		}
	}
	ly.pos = make([]int32, n)
	if !ly.routed {
		for i := range ly.pos {
			ly.pos[i] = int32(i % T)
		}
	}
	ly.u1, ly.inv1 = make([]F, n*D), make([]F, n)
	ly.qkv = make([]F, n*3*D)
	ly.qh, ly.kh, ly.vh = make([]F, n*D), make([]F, n*D), make([]F, n*D)
	ly.p = make([]F, B*H*ly.s*ly.s)
	ly.oh, ly.o, ly.a, ly.h = make([]F, n*D), make([]F, n*D), make([]F, n*D), make([]F, n*D)
	ly.u2, ly.inv2 = make([]F, n*D), make([]F, n)
	ly.hpre, ly.g, ly.th, ly.mo = make([]F, n*Fh), make([]F, n*Fh), make([]F, n*Fh), make([]F, n*D)
}

// plan builds every product of the layer once its input buffer is known.
func (ly *layer[F]) plan(m *Model[F]) {
	m.allocScratch()
	cfg, sc := m.cfg, m.scr
	B, D, Fh, H, hd := m.batch, cfg.DModel, cfg.MLPHidden, cfg.Heads, cfg.HeadDim()
	N, n, s, P := m.batch*cfg.SeqLen, ly.n, ly.s, cfg.PredictorHidden
	if !ly.routed {
		ly.xs = ly.x
	}
	ly.dOut, ly.dIn = m.gradBuf(ly.index+1), m.gradBuf(ly.index)
	if ly.routed {
		ly.dres, ly.df, ly.dxs = sc.dres[:n*D], sc.df[:n*D], sc.dxs[:n*D]
	} else {
		ly.dres, ly.df, ly.dxs = ly.dOut, ly.dOut, ly.dIn
	}

	ly.mmQKV = planMatMul(ly.u1, false, ly.wqkv, false, ly.qkv, n, D, 3*D)
	ly.mmWo = planMatMul(ly.o, false, ly.wo, false, ly.a, n, D, D)
	ly.mmW1 = planMatMul(ly.u2, false, ly.w1, false, ly.hpre, n, D, Fh)
	ly.mmW2 = planMatMul(ly.g, false, ly.w2, false, ly.mo, n, Fh, D)

	ly.mmDg = planMatMul(ly.df, false, ly.w2, true, sc.dg, n, D, Fh)
	ly.mmDw2 = planMatMul(ly.g, true, ly.df, false, ly.dw2, Fh, n, D)
	ly.mmDw1 = planMatMul(ly.u2, true, sc.dhpre, false, ly.dw1, D, n, Fh)
	ly.mmDu2 = planMatMul(sc.dhpre, false, ly.w1, true, sc.du2, n, Fh, D)
	ly.mmDo = planMatMul(sc.da, false, ly.wo, true, sc.do, n, D, D)
	ly.mmDwo = planMatMul(ly.o, true, sc.da, false, ly.dwo, D, n, D)
	ly.mmDwqkv = planMatMul(ly.u1, true, sc.dqkv, false, ly.dwqkv, D, n, 3*D)
	ly.mmDu1 = planMatMul(sc.dqkv, false, ly.wqkv, true, sc.du1, n, 3*D, D)
	if ly.predictor {
		ly.mmPred = planMatMul(ly.x, false, ly.predW1, false, ly.ph, N, D, P)
		ly.mmDpredW1 = planMatMul(ly.x, true, sc.dph, false, ly.dpredW1, D, N, P)
	}

	ly.mmScores, ly.mmAV = make([]matmul, B*H), make([]matmul, B*H)
	ly.mmDp, ly.mmDv = make([]matmul, B*H), make([]matmul, B*H)
	ly.mmDq, ly.mmDk = make([]matmul, B*H), make([]matmul, B*H)
	for bh := 0; bh < B*H; bh++ {
		qo, po := bh*s*hd, bh*s*s
		q, k, v := ly.qh[qo:qo+s*hd], ly.kh[qo:qo+s*hd], ly.vh[qo:qo+s*hd]
		p, oh := ly.p[po:po+s*s], ly.oh[qo:qo+s*hd]
		doh, dq, dk, dv := sc.doh[qo:qo+s*hd], sc.dqh[qo:qo+s*hd], sc.dkh[qo:qo+s*hd], sc.dvh[qo:qo+s*hd]
		dp := sc.dp[po : po+s*s]
		ly.mmScores[bh] = planMatMul(q, false, k, true, p, s, hd, s)
		ly.mmAV[bh] = planMatMul(p, false, v, false, oh, s, s, hd)
		ly.mmDp[bh] = planMatMul(doh, false, v, true, dp, s, hd, s)
		ly.mmDv[bh] = planMatMul(p, true, doh, false, dv, s, s, hd)
		ly.mmDq[bh] = planMatMul(dp, false, k, false, dq, s, s, hd)
		ly.mmDk[bh] = planMatMul(dp, true, q, false, dk, s, s, hd)
	}
}

func (ly *layer[F]) forward(m *Model[F]) {
	cfg := m.cfg
	B, T, D, H, hd := m.batch, cfg.SeqLen, cfg.DModel, cfg.Heads, cfg.HeadDim()
	n, s := ly.n, ly.s
	if ly.routed {
		ly.route(m)
	}

	// The block f on the processed tokens xs [n,D] at positions pos.
	rmsnormForward(ly.u1, ly.inv1, ly.xs, ly.ln1, n, D, cfg.NormEps)
	ly.mmQKV.run()
	splitHeads(ly.qh, ly.kh, ly.vh, ly.qkv, ly.pos, B, s, H, hd, m.cos, m.sin)
	scale := F(1 / math.Sqrt(float64(hd)))
	for bh := 0; bh < B*H; bh++ {
		ly.mmScores[bh].run()
		causalSoftmax(ly.p[bh*s*s:(bh+1)*s*s], s, scale)
		ly.mmAV[bh].run()
	}
	mergeHeads(ly.o, ly.oh, B, s, H, hd)
	ly.mmWo.run()
	for i := range ly.h {
		ly.h[i] = ly.xs[i] + ly.a[i]
	}
	rmsnormForward(ly.u2, ly.inv2, ly.h, ly.ln2, n, D, cfg.NormEps)
	ly.mmW1.run()
	geluForward(ly.g, ly.th, ly.hpre)
	ly.mmW2.run()

	if !ly.routed {
		for i := range ly.out {
			ly.out[i] = ly.h[i] + ly.mo[i]
		}
		return
	}
	// x_i + r_i·f_i for the selected tokens, x_i for all others. f = a + mlp
	// is the block's residual delta, so the residual is counted once.
	copy(ly.out, ly.x)
	for j := 0; j < n; j++ {
		b := j / s
		if j-b*s >= ly.count[b] {
			continue // an empty slot of causal routing
		}
		t := b*T + int(ly.sel[j])
		r := ly.r[j]
		dst, a, mo := ly.out[t*D:(t+1)*D], ly.a[j*D:(j+1)*D], ly.mo[j*D:(j+1)*D]
		for c := range dst {
			dst[c] += r * (a[c] + mo[c])
		}
	}
}

// route computes the router logits, selects the tokens — exactly k per
// sequence by top-k, or those the causal decision admits — gathers them,
// and evaluates the causal-decision loss.
func (ly *layer[F]) route(m *Model[F]) {
	cfg := m.cfg
	B, T, D := m.batch, cfg.SeqLen, cfg.DModel
	N, s := B*T, ly.s
	for t := 0; t < N; t++ {
		var acc F
		xr := ly.x[t*D : (t+1)*D]
		for c, w := range ly.router {
			acc += xr[c] * w
		}
		ly.z[t] = acc
	}
	decision := ly.z
	if ly.predictor {
		ly.predict(m)
		decision = ly.pl
	}
	clear(ly.target)
	for b := 0; b < B; b++ {
		z := ly.z[b*T : (b+1)*T]
		sel := ly.sel[b*s : (b+1)*s]
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
			for i := range ly.order {
				ly.order[i] = int32(i)
			}
			if !m.forceAllWeightOne {
				// Highest logit first; ties go to the earlier position, so the
				// choice is deterministic.
				slices.SortFunc(ly.order, func(i, j int32) int {
					switch {
					case z[i] > z[j]:
						return -1
					case z[i] < z[j]:
						return 1
					}
					return int(i - j)
				})
			}
			count = s
			copy(sel, ly.order[:s])
			slices.Sort(sel) // original order, so the causal mask is the plain one
		}
		ly.count[b] = count
		for j, t := range sel[:count] {
			row := b*T + int(t)
			ly.target[row] = 1
			ly.pos[b*s+j] = t
			copy(ly.xs[(b*s+j)*D:(b*s+j+1)*D], ly.x[row*D:(row+1)*D])
			if m.forceAllWeightOne {
				ly.r[b*s+j] = 1
			} else {
				ly.r[b*s+j] = sigmoid(z[t])
			}
		}
		// Empty slots (causal routing only) sit after the real tokens, so the
		// causal mask keeps them out of the real tokens' attention.
		for j := count; j < s; j++ {
			sel[j], ly.pos[b*s+j], ly.r[b*s+j] = 0, 0, 0
			clear(ly.xs[(b*s+j)*D : (b*s+j+1)*D])
		}
	}
	if m.causal {
		ly.bce = 0
		return
	}
	// Causal-decision loss: BCE of the decision logits against top-k membership.
	var sum float64
	for t := 0; t < N; t++ {
		sum += bceWithLogits(float64(decision[t]), float64(ly.target[t]))
	}
	ly.bce = sum / float64(N)
}

// predict computes the predictor's logits from the layer input.
func (ly *layer[F]) predict(m *Model[F]) {
	N, P := m.batch*m.cfg.SeqLen, m.cfg.PredictorHidden
	ly.mmPred.run()
	for t := 0; t < N; t++ {
		add(ly.ph[t*P:(t+1)*P], ly.predB1)
	}
	geluForward(ly.pg, ly.pth, ly.ph)
	for t := 0; t < N; t++ {
		var acc F
		for c, w := range ly.predW2 {
			acc += ly.pg[t*P+c] * w
		}
		ly.pl[t] = acc + ly.predB2[0]
	}
}

func (ly *layer[F]) backward(m *Model[F]) {
	cfg, sc := m.cfg, m.scr
	B, T, D, H, hd := m.batch, cfg.SeqLen, cfg.DModel, cfg.Heads, cfg.HeadDim()
	N, n, s := B*T, ly.n, ly.s
	dz := sc.dz

	if ly.routed {
		// out_t = x_t + r·f for selected t: the residual passes dy through;
		// f gets r·dy; r = σ(z) gets dy·f.
		copy(ly.dIn, ly.dOut)
		clear(dz)
		for j := 0; j < n; j++ {
			b := j / s
			t := b*T + int(ly.sel[j])
			r := ly.r[j]
			dy := ly.dOut[t*D : (t+1)*D]
			a, mo := ly.a[j*D:(j+1)*D], ly.mo[j*D:(j+1)*D]
			dres, df := ly.dres[j*D:(j+1)*D], ly.df[j*D:(j+1)*D]
			var dr F
			for c := range dy {
				dr += dy[c] * (a[c] + mo[c])
				dres[c] = dy[c]
				df[c] = r * dy[c]
			}
			if !m.forceAllWeightOne {
				dz[t] = dr * r * (1 - r)
			}
		}
	}

	// Block backward: f = a + mlp(ln2(xs + a)), a = attn(ln1(xs)).
	ly.mmDg.run()
	ly.mmDw2.run()
	geluBackward(sc.dhpre[:n*cfg.MLPHidden], sc.dg[:n*cfg.MLPHidden], ly.hpre, ly.th)
	ly.mmDw1.run()
	ly.mmDu2.run()
	dh := sc.dh[:n*D]
	clear(dh)
	rmsnormBackward(dh, ly.dln2, sc.du2, ly.h, ly.inv2, ly.ln2, n, D)
	da := sc.da[:n*D]
	for i := range da {
		da[i] = ly.df[i] + dh[i]
		ly.dxs[i] = ly.dres[i] + dh[i]
	}
	ly.mmDo.run()
	ly.mmDwo.run()
	splitHeadsPlain(sc.doh, sc.do, B, s, H, hd)
	scale := F(1 / math.Sqrt(float64(hd)))
	for bh := 0; bh < B*H; bh++ {
		ly.mmDp[bh].run()
		ly.mmDv[bh].run()
		causalSoftmaxBackward(sc.dp[bh*s*s:(bh+1)*s*s], ly.p[bh*s*s:(bh+1)*s*s], s, scale)
		ly.mmDq[bh].run()
		ly.mmDk[bh].run()
	}
	mergeQKVGrad(sc.dqkv, sc.dqh, sc.dkh, sc.dvh, ly.pos, B, s, H, hd, m.cos, m.sin)
	ly.mmDwqkv.run()
	ly.mmDu1.run()
	rmsnormBackward(ly.dxs, ly.dln1, sc.du1, ly.xs, ly.inv1, ly.ln1, n, D)

	if !ly.routed {
		return // dxs is dIn
	}
	for j := 0; j < n; j++ {
		t := (j/s)*T + int(ly.sel[j])
		copy(ly.dIn[t*D:(t+1)*D], ly.dxs[j*D:(j+1)*D])
	}
	lam := F(cfg.AuxLossWeight / float64(N))
	if !ly.predictor {
		for t := 0; t < N; t++ {
			dz[t] += lam * (sigmoid(ly.z[t]) - ly.target[t])
		}
	} else {
		ly.predictorBackward(m, lam)
	}
	// z_t = x_t · router.
	for t := 0; t < N; t++ {
		g := dz[t]
		if g == 0 {
			continue
		}
		xr, dxr := ly.x[t*D:(t+1)*D], ly.dIn[t*D:(t+1)*D]
		for c, w := range ly.router {
			dxr[c] += g * w
			ly.drouter[c] += g * xr[c]
		}
	}
}

// predictorBackward trains the predictor only: its input is stop-gradient.
func (ly *layer[F]) predictorBackward(m *Model[F], lam F) {
	cfg, sc := m.cfg, m.scr
	N, P := m.batch*cfg.SeqLen, cfg.PredictorHidden
	dph := sc.dph[:N*P]
	for t := 0; t < N; t++ {
		dpl := lam * (sigmoid(ly.pl[t]) - ly.target[t])
		ly.dpB2[0] += dpl
		pg, ph, pth, d := ly.pg[t*P:(t+1)*P], ly.ph[t*P:(t+1)*P], ly.pth[t*P:(t+1)*P], dph[t*P:(t+1)*P]
		for c := range pg {
			ly.dpredW2[c] += dpl * pg[c]
			d[c] = dpl * ly.predW2[c]
		}
		geluBackward(d, d, ph, pth)
		add(ly.dpredB1, d)
	}
	ly.mmDpredW1.run()
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
