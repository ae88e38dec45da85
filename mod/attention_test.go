package mod

import (
	"math"
	"slices"
	"testing"
)

// setAttnBlock re-plans every layer with causal attention cut into row
// blocks of block rows.
func (m *Model[F]) setAttnBlock(block int) {
	m.attnBlock = block
	for i := range m.layers {
		m.layers[i].plan(m)
	}
}

// Blocked causal attention skips only exact zeros, so it must give the
// unblocked loss and gradients up to summation order, for dense and
// routed layers, with blocks that divide the sequence and one that does
// not. The unblocked model is the one the finite-difference checks hold.
func TestBlockedCausalAttentionMatchesUnblocked(t *testing.T) {
	cfg := tinyConfig(DecisionAuxLoss, PositionsRoPE)
	cfg.SeqLen = 24 // routed layers run s = 12 tokens
	const B = 2
	N := B * cfg.SeqLen
	tokens, targets := randomTokens(N, cfg.Vocab, 1), randomTokens(N, cfg.Vocab, 2)
	run := func(block int) (Loss, []float64, float64) {
		m, err := NewModel[float64](cfg, B)
		if err != nil {
			t.Fatal(err)
		}
		randomize(m.Params(), 11, 0.5)
		m.setAttnBlock(block)
		var flops float64
		for _, s := range m.GEMMShapes() {
			flops += s.FLOPs()
		}
		loss, err := m.Forward(tokens, targets)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Backward(); err != nil {
			t.Fatal(err)
		}
		return loss, slices.Clone(m.Grads()), flops
	}
	wantLoss, wantGrads, fullFLOPs := run(1 << 20)
	for _, block := range []int{4, 5, 6} {
		loss, grads, flops := run(block)
		if d := math.Abs(loss.Total - wantLoss.Total); d > 1e-12 {
			t.Errorf("block %d: loss %.15g, unblocked %.15g", block, loss.Total, wantLoss.Total)
		}
		var worst float64
		for i := range grads {
			worst = max(worst, math.Abs(grads[i]-wantGrads[i])/max(math.Abs(wantGrads[i]), 1e-6))
		}
		t.Logf("block %d worst %g", block, worst)
		if worst > 1e-9 {
			t.Errorf("block %d: gradients differ from unblocked by up to %.2g (relative)", block, worst)
		}
		if flops >= fullFLOPs {
			t.Errorf("block %d: products do %g FLOPs, no fewer than unblocked %g", block, flops, fullFLOPs)
		}
	}
}

func TestCausalBlocks(t *testing.T) {
	for _, c := range []struct{ s, block, want int }{
		{512, 128, 4}, {256, 128, 2}, {255, 128, 1}, {128, 128, 1}, {64, 128, 1}, {300, 128, 3}, {24, 5, 5}, {24, 0, 1},
	} {
		if got := causalBlocks(c.s, c.block); got != c.want {
			t.Errorf("causalBlocks(%d, %d) = %d, want %d", c.s, c.block, got, c.want)
		}
	}
}
