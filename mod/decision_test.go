package mod

import (
	"math"
	"testing"
)

// TestDecisionCountsOnConstructedCases scores hand-built decisions over one
// sequence of T = 8 tokens against a known top-k set, so that every figure
// can be checked by hand. The first case is the one accuracy hides: a
// decision that routes nothing scores 1 − C on accuracy and 0 on recall.
func TestDecisionCountsOnConstructedCases(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		topk, routed                 []int // positions of the 8
		accuracy, precision, recall  float64
		f1, routedShare, wantTokensN float64
	}{
		{"routes nothing, C=1/8", []int{3}, nil, 7.0 / 8, 0, 0, 0, 0, 8},
		{"routes nothing, C=1/4", []int{3, 6}, nil, 6.0 / 8, 0, 0, 0, 0, 8},
		{"routes everything", []int{3}, []int{0, 1, 2, 3, 4, 5, 6, 7}, 1.0 / 8, 1.0 / 8, 1, 2.0 / 9, 1, 8},
		{"perfect", []int{1, 5}, []int{1, 5}, 1, 1, 1, 1, 2.0 / 8, 8},
		{"half right", []int{1, 5}, []int{1, 2}, 6.0 / 8, 0.5, 0.5, 0.5, 2.0 / 8, 8},
		{"all wrong", []int{1, 5}, []int{0, 2}, 4.0 / 8, 0, 0, 0, 2.0 / 8, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d DecisionCounts
			in := func(set []int, p int) bool {
				for _, q := range set {
					if q == p {
						return true
					}
				}
				return false
			}
			for p := 0; p < 8; p++ {
				d.Add(in(tc.routed, p), in(tc.topk, p))
			}
			for _, c := range []struct {
				what      string
				got, want float64
			}{
				{"tokens", float64(d.Tokens()), tc.wantTokensN},
				{"accuracy", d.Accuracy(), tc.accuracy},
				{"precision", d.Precision(), tc.precision},
				{"recall", d.Recall(), tc.recall},
				{"F1", d.F1(), tc.f1},
				{"routed share", d.Routed(), tc.routedShare},
			} {
				if math.Abs(c.got-c.want) > 1e-12 {
					t.Errorf("%s = %v, want %v (counts %+v)", c.what, c.got, c.want, d)
				}
			}
		})
	}
}

// TestForwardFLOPsAtShare: at the share top-k takes, the cost is the
// top-k forward cost; at share 1 a routed layer costs a dense layer plus
// its router; the cost grows with the share.
func TestForwardFLOPsAtShare(t *testing.T) {
	cfg := Config{DModel: 32, Layers: 4, Heads: 2, SeqLen: 64, Capacity: 0.125}.WithDefaults()
	topk := cfg.TrainFLOPs(1).Forward
	if got := cfg.ForwardFLOPsAtShare([]float64{0.125, 0.125}); math.Abs(got-topk) > 1e-6*topk {
		t.Errorf("at share C: %g FLOPs, want the top-k count %g", got, topk)
	}
	routers := 2 * 2 * float64(cfg.SeqLen*cfg.DModel) // two routed layers, one [T,D]·[D,1] product each
	dense := cfg.Dense().TrainFLOPs(1).Forward
	if got := cfg.ForwardFLOPsAtShare([]float64{1, 1}); math.Abs(got-(dense+routers)) > 1e-6*dense {
		t.Errorf("at share 1: %g FLOPs, want dense %g + routers %g", got, dense, routers)
	}
	if lo, hi := cfg.ForwardFLOPsAtShare([]float64{0.1, 0.1}), cfg.ForwardFLOPsAtShare([]float64{0.2, 0.1}); !(lo < hi) {
		t.Errorf("cost at share 0.2 (%g) is not above cost at 0.1 (%g)", hi, lo)
	}
}
