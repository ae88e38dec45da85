package mod

import (
	"math"
	"testing"
)

// TestTrainFLOPs checks the analytic count against a hand count of one
// small dense layer, and that routing scales the routed layers by k/T.
func TestTrainFLOPs(t *testing.T) {
	cfg := Config{Vocab: 10, DModel: 4, Layers: 1, Heads: 2, SeqLen: 8, MLPHidden: 16, RoutedLayers: []int{}}.WithDefaults()
	const B = 3
	N := float64(B * 8)
	// qkv 2·N·4·12, out 2·N·4·4, mlp 2·2·N·4·16, attention 2·B·H·2·8·8·2, head 2·N·4·10.
	fwd := 2*N*4*12 + 2*N*4*4 + 2*2*N*4*16 + 2*B*2*2*8*8*2 + 2*N*4*10
	if got := cfg.TrainFLOPs(B); got.Forward != fwd || got.Backward != 2*fwd {
		t.Fatalf("dense FLOPs %+v, want forward %v and backward %v", got, fwd, 2*fwd)
	}
	big := Config{DModel: 512, Layers: 8, Heads: 8, SeqLen: 512, Capacity: 0.125}.WithDefaults()
	ratio := big.Dense().TrainFLOPs(8).Total() / big.TrainFLOPs(8).Total()
	// 4 dense layers + 4 at 1/8 of the tokens (attention at 1/64): ≈ 1.8×.
	if math.Abs(ratio-1.8) > 0.1 {
		t.Fatalf("dense/MoD FLOP ratio %.3f, want about 1.8", ratio)
	}
}
