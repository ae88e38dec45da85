package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/corpus"
	"github.com/modcoord/modcoord/tokenizer"
)

type prepareOptions struct {
	tokenizer, out string
	val            []string
	valFraction    float64
	shardTokens    int
	jsonOut        bool
}

func newPrepareCmd() *cobra.Command {
	var o prepareOptions
	cmd := &cobra.Command{
		Use:   "prepare --out DIR [--tokenizer byte|gpt2] PATH...",
		Short: "Tokenise text into token shards that train, local and jobs read",
		Long: `Tokenise text files and directories (walked in lexical order) into llm.c
token shards, train_NNNNNN.bin and val_NNNNNN.bin, and a manifest.json
naming the tokenizer, in --out. Each file is a document; gpt2's
end-of-text token separates documents. Inputs named *.bin are token files
(llm.c or nanoGPT's headerless uint16 layout) and are copied as they are.

The validation stream is --val's files if given, else the last
--val-fraction of the input (default 0.5%, or 10% under 64 MiB, where the
byte tokenizer gives exactly the split train --data FILE uses).

Train on the result with train --data DIR, or name DIR (relative to the
workers' data root) as a job spec's data, with the same tokenizer.`,
		Args: positional(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPrepare(cmd.OutOrStdout(), cmd.ErrOrStderr(), args, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.tokenizer, "tokenizer", tokenizer.ByteName, "tokenizer: "+strings.Join(tokenizer.Names(), " or "))
	fs.StringVar(&o.out, "out", "", "directory for the shards and manifest.json (created if missing)")
	fs.StringArrayVar(&o.val, "val", nil, "validation file or directory (repeatable); then every PATH trains")
	fs.Float64Var(&o.valFraction, "val-fraction", 0, "fraction of the input that validates when --val is not given (0: 0.5%, or 10% for inputs under 64 MiB)")
	fs.IntVar(&o.shardTokens, "shard-tokens", corpus.DefaultShardTokens, "tokens per shard at most")
	addJSONFlag(cmd, &o.jsonOut)
	return cmd
}

func runPrepare(stdout, stderr io.Writer, inputs []string, o prepareOptions) error {
	if o.out == "" {
		return usageErrorf("--out is required: the directory to write the shards to")
	}
	if o.valFraction < 0 || o.valFraction >= 1 {
		return usageErrorf("--val-fraction %v: use a fraction in [0, 1)", o.valFraction)
	}
	if len(o.val) > 0 && o.valFraction != 0 {
		return usageErrorf("--val and --val-fraction both choose the validation stream; give one")
	}
	if o.shardTokens < 1 || o.shardTokens > corpus.MaxShardTokens {
		return usageErrorf("--shard-tokens %d: use 1..%d", o.shardTokens, corpus.MaxShardTokens)
	}
	tok, err := tokenizer.New(o.tokenizer)
	if err != nil {
		return usageErrorf("--tokenizer: %v", err)
	}
	start := time.Now()
	bar := newPrepareBar(stderr)
	m, err := corpus.Prepare(corpus.PrepareOptions{
		Inputs: inputs, ValInputs: o.val, ValFraction: o.valFraction, OutDir: o.out,
		Tokenizer: tok, ShardTokens: o.shardTokens, Progress: bar.observe,
	})
	bar.done()
	if err != nil {
		return err
	}
	if o.jsonOut {
		return writeJSON(stdout, m)
	}
	fmt.Fprintf(stdout, "%s: %d train tokens in %d shards, %d val tokens in %d shards, tokenizer %s (vocab %d), %.1f s\n",
		o.out, m.TrainTokens, len(m.Train), m.ValTokens, len(m.Val), m.Tokenizer, m.VocabSize, time.Since(start).Seconds())
	return nil
}

// prepareBar draws Prepare's progress on stderr: a bar redrawn in place on
// a terminal, a line per whole percent otherwise (logs, CI).
type prepareBar struct {
	w     io.Writer
	tty   bool
	lines func(corpus.Progress)
	drawn bool
	last  time.Time
}

func newPrepareBar(w io.Writer) *prepareBar {
	b := &prepareBar{w: w, lines: corpus.ProgressLines(w)}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			b.tty = true
		}
	}
	return b
}

func (b *prepareBar) observe(p corpus.Progress) {
	if !b.tty {
		b.lines(p)
		return
	}
	if now := time.Now(); now.Sub(b.last) > 100*time.Millisecond || p.Done == p.Total {
		b.last = now
		const width = 30
		fill := int(p.Fraction() * width)
		fmt.Fprintf(b.w, "\r\033[Kprepare [%s%s] %3.0f%%  %d train, %d val tokens", strings.Repeat("=", fill), strings.Repeat(" ", width-fill), 100*p.Fraction(), p.TrainTokens, p.ValTokens)
		b.drawn = true
	}
}

func (b *prepareBar) done() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}
