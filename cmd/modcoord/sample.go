package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/tokenizer"
)

type sampleOptions struct {
	ckpt, prompt        string
	tokens, topK, batch int
	temperature         float64
	seed                uint64
	jsonOut             bool
}

// sampleResult is what `sample --json` prints.
type sampleResult struct {
	Checkpoint string    `json:"checkpoint"`
	Step       int64     `json:"step"`
	Prompt     string    `json:"prompt"`
	Samples    []string  `json:"samples"` // the continuations, without the prompt
	Routed     []float64 `json:"routed_fraction"`
	KVBytes    int       `json:"kv_bytes"`
}

func newSampleCmd() *cobra.Command {
	var o sampleOptions
	cmd := &cobra.Command{
		Use:   "sample",
		Short: "Generate text from a checkpoint with causal routing and a KV cache",
		Long: `Generate text from a checkpoint with causal routing and a KV cache. As
nanoGPT's generate does, the model sees at most its seq_len last tokens:
a longer prompt is cropped to its end, and once prompt plus output fill the
context, each new token is predicted from the last seq_len tokens.`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSample(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.ckpt, "checkpoint", "", "checkpoint: a step directory, or a directory written by `train --out`")
	fs.StringVar(&o.prompt, "prompt", "ROMEO:", "text to continue")
	fs.IntVar(&o.tokens, "tokens", 200, "tokens to generate per row")
	fs.Float64Var(&o.temperature, "temperature", 0.8, "sampling temperature (0: greedy)")
	fs.IntVar(&o.topK, "top-k", 0, "sample only among the K most likely tokens (0: all)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed")
	fs.IntVar(&o.batch, "batch", 1, "independent samples generated together")
	addJSONFlag(cmd, &o.jsonOut)
	return cmd
}

func runSample(ctx context.Context, stdout, stderr io.Writer, o sampleOptions) error {
	if o.temperature < 0 || o.tokens < 0 || o.topK < 0 || o.batch < 1 {
		return usageErrorf("--temperature, --tokens and --top-k must be ≥ 0 and --batch ≥ 1")
	}
	if o.prompt == "" {
		return usageErrorf("--prompt is empty; give at least one character")
	}
	ck, err := openCheckpoint(ctx, stderr, o.ckpt)
	if err != nil {
		return err
	}
	params, err := ck.LoadParams(ctx)
	if err != nil {
		return fmt.Errorf("load %s: %w", ck.Dir, err)
	}
	cfg := ck.Config.Model
	// The checkpoint names the tokenizer its model reads (byte when it
	// predates the field): the prompt is encoded and the output decoded
	// with it.
	tok, err := tokenizer.New(ck.Config.TokenizerName())
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", ck.Dir, err)
	}
	if n := len(tok.Encode([]byte(o.prompt))); n > cfg.SeqLen {
		fmt.Fprintf(stderr, "note: the prompt (%d tokens) is longer than the model's context; it sees the last %d\n", n, cfg.SeqLen)
	}
	out, dec, err := generateWith(ctx, tok, cfg, params, []byte(o.prompt), o.tokens, o.batch, o.temperature, o.topK, o.seed)
	if err != nil {
		return err
	}
	frac := dec.RoutedFraction()
	if o.jsonOut {
		return writeJSON(stdout, sampleResult{Checkpoint: ck.Dir, Step: ck.Manifest.Step, Prompt: o.prompt,
			Samples: out, Routed: frac, KVBytes: dec.KVBytes()})
	}
	for b, text := range out {
		if o.batch > 1 {
			fmt.Fprintf(stdout, "--- sample %d\n", b+1)
		}
		fmt.Fprintf(stdout, "%s%s\n", o.prompt, text)
	}
	for l, f := range frac {
		if cfg.IsRouted(l) {
			fmt.Fprintf(stderr, "layer %d routed %.1f%% of tokens; ", l, 100*f)
		}
	}
	fmt.Fprintf(stderr, "KV cache %d bytes\n", dec.KVBytes())
	return nil
}

// generate feeds the prompt and samples n tokens per row with causal
// routing and the routed KV cache. The model's context is its seq_len; as
// in nanoGPT's generate, it conditions on the last seq_len tokens: a longer
// prompt is cropped to its end, and once the cache is full each new token
// restarts it on the last seq_len tokens (the decoder's positions and
// routing decisions are those of a fresh window, exactly what a forward
// pass over the cropped context computes).
func generate(ctx context.Context, cfg mod.Config, params []float32, prompt []byte, n, batch int, temperature float64, topK int, seed uint64) ([]string, *mod.Decoder[float32], error) {
	return generateWith(ctx, tokenizer.Byte{}, cfg, params, prompt, n, batch, temperature, topK, seed)
}

// generateWith is generate for a model reading tok's ids: the prompt is
// encoded with tok and each row's new tokens decoded with it.
func generateWith(ctx context.Context, tok tokenizer.Tokenizer, cfg mod.Config, params []float32, text []byte, n, batch int, temperature float64, topK int, seed uint64) ([]string, *mod.Decoder[float32], error) {
	if len(text) == 0 {
		return nil, nil, usageErrorf("--prompt is empty; give at least one character")
	}
	if tok.Name() != tokenizer.ByteName && tok.VocabSize() > cfg.Vocab {
		return nil, nil, fmt.Errorf("the model's vocabulary (%d) is smaller than tokenizer %s's (%d)", cfg.Vocab, tok.Name(), tok.VocabSize())
	}
	prompt := tok.Encode(text)
	if len(prompt) == 0 {
		return nil, nil, usageErrorf("--prompt encodes to no tokens; give some text")
	}
	if len(prompt) > cfg.SeqLen {
		prompt = prompt[len(prompt)-cfg.SeqLen:]
	}
	dec, err := mod.NewDecoder(cfg, batch, params)
	if err != nil {
		return nil, nil, err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// hist holds each row's context: the prompt, then what it generated.
	hist := make([][]int32, batch)
	for b := range hist {
		hist[b] = make([]int32, 0, len(prompt)+n)
		for _, c := range prompt {
			hist[b] = append(hist[b], int32(c))
		}
	}
	step := make([]int32, batch)
	var logits []float32
	feed := func(from int) error { // feed positions from.. of every row
		for i := from; i < len(hist[0]); i++ {
			for b := range step {
				step[b] = hist[b][i]
			}
			if logits, err = dec.Step(step); err != nil {
				return err
			}
		}
		return nil
	}
	if err := feed(0); err != nil {
		return nil, nil, err
	}
	probs := make([]float64, cfg.Vocab)
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		for b := range step {
			hist[b] = append(hist[b], pick(logits[b*cfg.Vocab:(b+1)*cfg.Vocab], probs, temperature, topK, rng))
		}
		if i+1 == n {
			break
		}
		if dec.Len() < cfg.SeqLen {
			if err := feed(len(hist[0]) - 1); err != nil {
				return nil, nil, err
			}
			continue
		}
		// The context is full: crop it to the last seq_len tokens.
		dec.Reset()
		if err := feed(len(hist[0]) - cfg.SeqLen); err != nil {
			return nil, nil, err
		}
	}
	texts := make([]string, batch)
	for b := range hist {
		gen := hist[b][len(prompt):]
		ids := make([]int, len(gen))
		for i, t := range gen {
			ids[i] = int(t)
		}
		texts[b] = tok.Decode(ids)
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
