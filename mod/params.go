package mod

import (
	"fmt"
	"math"
)

// Tensor is one named parameter tensor inside the flat parameter vector.
type Tensor struct {
	Name   string `json:"name"`
	Shape  []int  `json:"shape"`
	Offset int    `json:"offset"`
	// Decay says whether AdamW's decoupled weight decay applies. Matrices
	// and embeddings decay; norm gains, biases and router vectors do not.
	Decay bool `json:"decay"`
}

// Size is the number of elements.
func (t Tensor) Size() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Layout places every parameter of a config in one flat vector, in a fixed
// order. shard/ cuts this vector into ranges; checkpoints store it; the
// PyTorch reference (tools/torch_reference.py) reproduces the same order.
type Layout struct {
	Tensors []Tensor `json:"tensors"`
	Total   int      `json:"total"`
	byName  map[string]int
}

// LayerParams are the offsets of one transformer layer's tensors.
type layerOffsets struct {
	ln1, wqkv, wo, ln2, w1, w2 int
	// Routed layers only (-1 otherwise).
	router            int
	predW1, predB1    int
	predW2, predB2    int
	routed, predictor bool
}

// NewLayout builds the layout of cfg. The order is:
//
//	tok_emb [V,D]; pos_emb [T,D] (learned positions only);
//	per layer l: l.ln1 [D], l.wqkv [D,3D], l.wo [D,D], l.ln2 [D], l.w1 [D,F], l.w2 [F,D],
//	  routed layers add l.router [D], and with the predictor
//	  l.pred_w1 [D,P], l.pred_b1 [P], l.pred_w2 [P], l.pred_b2 [1];
//	ln_f [D]; lm_head [D,V].
//
// Matrices are row-major [in, out]: y = x·W.
func NewLayout(cfg Config) *Layout {
	l := &Layout{byName: map[string]int{}}
	add := func(name string, decay bool, shape ...int) {
		t := Tensor{Name: name, Shape: shape, Offset: l.Total, Decay: decay}
		l.byName[name] = len(l.Tensors)
		l.Tensors = append(l.Tensors, t)
		l.Total += t.Size()
	}
	D, V, T, F, P := cfg.DModel, cfg.Vocab, cfg.SeqLen, cfg.MLPHidden, cfg.PredictorHidden
	add("tok_emb", true, V, D)
	if cfg.Positions == PositionsLearned {
		add("pos_emb", true, T, D)
	}
	for i := 0; i < cfg.Layers; i++ {
		p := fmt.Sprintf("layer%d.", i)
		add(p+"ln1", false, D)
		add(p+"wqkv", true, D, 3*D)
		add(p+"wo", true, D, D)
		add(p+"ln2", false, D)
		add(p+"w1", true, D, F)
		add(p+"w2", true, F, D)
		if cfg.IsRouted(i) {
			add(p+"router", false, D)
			if cfg.Decision == DecisionPredictor {
				add(p+"pred_w1", true, D, P)
				add(p+"pred_b1", false, P)
				add(p+"pred_w2", false, P)
				add(p+"pred_b2", false, 1)
			}
		}
	}
	add("ln_f", false, D)
	add("lm_head", true, D, V)
	return l
}

// Lookup returns the named tensor.
func (l *Layout) Lookup(name string) (Tensor, bool) {
	i, ok := l.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return l.Tensors[i], true
}

func (l *Layout) offset(name string) int {
	i, ok := l.byName[name]
	if !ok {
		return -1
	}
	return l.Tensors[i].Offset
}

func (l *Layout) layer(i int, cfg Config) layerOffsets {
	p := fmt.Sprintf("layer%d.", i)
	o := layerOffsets{
		ln1: l.offset(p + "ln1"), wqkv: l.offset(p + "wqkv"), wo: l.offset(p + "wo"),
		ln2: l.offset(p + "ln2"), w1: l.offset(p + "w1"), w2: l.offset(p + "w2"),
		router: l.offset(p + "router"),
		predW1: l.offset(p + "pred_w1"), predB1: l.offset(p + "pred_b1"),
		predW2: l.offset(p + "pred_w2"), predB2: l.offset(p + "pred_b2"),
	}
	o.routed = cfg.IsRouted(i)
	o.predictor = o.routed && cfg.Decision == DecisionPredictor
	return o
}

// DecaySpans returns the [lo,hi) spans of the flat vector that take weight
// decay, in order. Optimizers use it to update any sub-range.
func (l *Layout) DecaySpans() [][2]int {
	var s [][2]int
	for _, t := range l.Tensors {
		if !t.Decay {
			continue
		}
		if n := len(s); n > 0 && s[n-1][1] == t.Offset {
			s[n-1][1] = t.Offset + t.Size()
			continue
		}
		s = append(s, [2]int{t.Offset, t.Offset + t.Size()})
	}
	return s
}

// InitParams fills a flat vector with the initial weights of cfg: normal
// with std 0.02, residual output projections scaled by 1/sqrt(2L) (GPT-2),
// norm gains at 1, biases at 0. It is a pure function of cfg.Seed.
func InitParams[F Float](cfg Config, l *Layout, params []F) {
	rng := newRNG(cfg.Seed, 0x1417)
	resid := 0.02 / math.Sqrt(2*float64(cfg.Layers))
	for _, t := range l.Tensors {
		dst := params[t.Offset : t.Offset+t.Size()]
		std := 0.02
		switch {
		case hasSuffix(t.Name, "ln1"), hasSuffix(t.Name, "ln2"), t.Name == "ln_f":
			for i := range dst {
				dst[i] = 1
			}
			continue
		case hasSuffix(t.Name, "pred_b1"), hasSuffix(t.Name, "pred_b2"):
			for i := range dst {
				dst[i] = 0
			}
			continue
		case hasSuffix(t.Name, ".wo"), hasSuffix(t.Name, ".w2"):
			std = resid
		case hasSuffix(t.Name, "pred_w1"), hasSuffix(t.Name, "pred_w2"):
			std = 1 / math.Sqrt(float64(t.Shape[0]))
		}
		for i := range dst {
			dst[i] = F(rng.normal() * std)
		}
	}
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}
