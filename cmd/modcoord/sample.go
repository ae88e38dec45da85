package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"

	"github.com/modcoord/modcoord/mod"
)

func cmdSample(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sample", flag.ContinueOnError)
	ckpt := fs.String("checkpoint", "", "checkpoint: a step directory, or a directory written by `train --out`")
	prompt := fs.String("prompt", "ROMEO:", "text to continue")
	tokens := fs.Int("tokens", 200, "tokens to generate per row")
	temperature := fs.Float64("temperature", 0.8, "sampling temperature (0: greedy)")
	topK := fs.Int("top-k", 0, "sample only among the K most likely tokens (0: all)")
	seed := fs.Uint64("seed", 1, "random seed")
	batch := fs.Int("batch", 1, "independent samples generated together")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *temperature < 0 || *tokens < 0 || *topK < 0 || *batch < 1 {
		return fmt.Errorf("--temperature, --tokens and --top-k must be ≥ 0 and --batch ≥ 1")
	}
	ck, err := openCheckpoint(ctx, *ckpt)
	if err != nil {
		return err
	}
	params, err := ck.LoadParams(ctx)
	if err != nil {
		return err
	}
	out, dec, err := generate(ctx, ck.Config.Model, params, []byte(*prompt), *tokens, *batch, *temperature, *topK, *seed)
	if err != nil {
		return err
	}
	for b, text := range out {
		if *batch > 1 {
			fmt.Printf("--- sample %d\n", b+1)
		}
		fmt.Printf("%s%s\n", *prompt, text)
	}
	frac := dec.RoutedFraction()
	for l, f := range frac {
		if ck.Config.Model.IsRouted(l) {
			fmt.Fprintf(os.Stderr, "layer %d routed %.1f%% of tokens; ", l, 100*f)
		}
	}
	fmt.Fprintf(os.Stderr, "KV cache %d bytes\n", dec.KVBytes())
	return nil
}

// generate feeds the prompt and samples n tokens per row with causal
// routing and the routed KV cache. The context is the model's seq_len;
// prompt plus output must fit in it.
func generate(ctx context.Context, cfg mod.Config, params []float32, prompt []byte, n, batch int, temperature float64, topK int, seed uint64) ([]string, *mod.Decoder[float32], error) {
	if len(prompt) == 0 {
		return nil, nil, fmt.Errorf("--prompt is empty; give at least one character")
	}
	if len(prompt)+n > cfg.SeqLen {
		return nil, nil, fmt.Errorf("prompt (%d bytes) plus --tokens %d exceeds the model's context of %d tokens", len(prompt), n, cfg.SeqLen)
	}
	dec, err := mod.NewDecoder(cfg, batch, params)
	if err != nil {
		return nil, nil, err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	step := make([]int32, batch)
	var logits []float32
	for _, c := range prompt {
		for b := range step {
			step[b] = int32(c)
		}
		if logits, err = dec.Step(step); err != nil {
			return nil, nil, err
		}
	}
	out := make([][]byte, batch)
	probs := make([]float64, cfg.Vocab)
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		for b := range step {
			step[b] = pick(logits[b*cfg.Vocab:(b+1)*cfg.Vocab], probs, temperature, topK, rng)
			out[b] = append(out[b], byte(step[b]))
		}
		if i+1 < n {
			if logits, err = dec.Step(step); err != nil {
				return nil, nil, err
			}
		}
	}
	texts := make([]string, batch)
	for b := range out {
		texts[b] = string(out[b])
	}
	return texts, dec, nil
}

// pick samples a token from logits at the given temperature, among the
// topK most likely (0: all); temperature 0 is greedy.
func pick(logits []float32, probs []float64, temperature float64, topK int, rng *rand.Rand) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if temperature == 0 {
		return int32(best)
	}
	cut := math.Inf(-1)
	if topK > 0 && topK < len(logits) {
		sorted := slices.Clone(logits)
		slices.Sort(sorted)
		cut = float64(sorted[len(sorted)-topK])
	}
	var sum float64
	for i, v := range logits {
		probs[i] = 0
		if float64(v) >= cut {
			probs[i] = math.Exp((float64(v) - float64(logits[best])) / temperature)
		}
		sum += probs[i]
	}
	u := rng.Float64() * sum
	for i, p := range probs {
		if u < p {
			return int32(i)
		}
		u -= p
	}
	return int32(best)
}
