package tokenizer

import (
	"strings"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer/codec"
)

// GPT2Name is the name of GPT-2's BPE tokenizer (tiktoken's r50k_base).
const GPT2Name = "gpt2"

const (
	gpt2Vocab = 50257
	gpt2EOT   = 50256
	eotText   = "<|endoftext|>"
)

// gpt2 wraps the r50k_base codec. The codec does not decode its special
// token, so EOT is handled here.
type gpt2 struct{ c *codec.Codec }

func newGPT2() gpt2 { return gpt2{c: codec.NewR50kBase()} }

func (gpt2) Name() string     { return GPT2Name }
func (gpt2) VocabSize() int   { return gpt2Vocab }
func (gpt2) EOT() (int, bool) { return gpt2EOT, true }

func (g gpt2) Encode(text []byte) []int {
	// The codec only fails on a regexp time-out, which is not set, or on
	// invalid UTF-8 in strict mode, which is not used.
	ids, _, err := g.c.Encode(string(text))
	if err != nil {
		return nil
	}
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// Decode decodes runs of ordinary ids with the codec and writes EOT and
// out-of-range ids itself, so one bad id does not lose the whole string.
func (g gpt2) Decode(tokens []int) string {
	var sb strings.Builder
	run := make([]uint, 0, len(tokens))
	flush := func() {
		if len(run) == 0 {
			return
		}
		s, err := g.c.Decode(run)
		if err != nil {
			s = string(utf8.RuneError)
		}
		sb.WriteString(s)
		run = run[:0]
	}
	for _, t := range tokens {
		switch {
		case t == gpt2EOT:
			flush()
			sb.WriteString(eotText)
		case t < 0 || t >= gpt2EOT:
			flush()
			sb.WriteRune(utf8.RuneError)
		default:
			run = append(run, uint(t))
		}
	}
	flush()
	return sb.String()
}
