package mod

// Random routing, the paper's control for learned routing: each routed
// layer takes k tokens per sequence drawn at random instead of its top-k
// router logits. A token's draw is a hash of the seed, the layer and the
// tokens up to and including it, so that
//   - it is reproducible: the same batch (a pure function of seed and step)
//     gets the same choice, whatever the worker count or a resume;
//   - it changes from step to step, since training windows start at random
//     offsets and the prefix differs;
//   - it is causal: a token's draw never depends on a later token, so the
//     same draws serve sampling (route when the draw falls in the top C of
//     [0,1)), with nothing to learn.

// randomScores writes one score per token into rt.random: u − (1 − C) for a
// draw u uniform in [0,1). Top-k over the scores picks k tokens uniformly
// at random; a score > 0 happens with probability C, which is the causal
// decision the causal model uses.
func (ly *layer[F]) randomScores(m *Model[F]) {
	cfg := m.cfg
	B, T := m.batch, cfg.SeqLen
	base := mix64(cfg.Seed ^ mix64(uint64(ly.index)+0x5eed))
	threshold := 1 - cfg.Capacity
	for b := 0; b < B; b++ {
		h := base
		for t := 0; t < T; t++ {
			h = mix64(h ^ uint64(m.tokens[b*T+t]))
			u := float64(h>>11) / (1 << 53)
			ly.routing.random[b*T+t] = F(u - threshold)
		}
	}
}
