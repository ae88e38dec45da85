package tokenizer

import (
	"fmt"
	"strings"
)

// Tokenizer maps text to token ids in [0, VocabSize()) and back.
// Implementations are safe for concurrent use.
type Tokenizer interface {
	// Name is the name New accepts for this tokenizer.
	Name() string
	// VocabSize is one more than the largest id Encode or EOT can return.
	VocabSize() int
	// Encode tokenises text. Special tokens in the text are not
	// recognised (see the package comment).
	Encode(text []byte) []int
	// Decode is the inverse of Encode; ids outside the vocabulary decode
	// to U+FFFD.
	Decode(tokens []int) string
	// EOT is the end-of-text token that separates documents, if the
	// vocabulary has one.
	EOT() (int, bool)
}

// Names lists the tokenizers New knows, in a fixed order.
func Names() []string { return []string{ByteName, GPT2Name} }

// New returns the tokenizer with the given name.
func New(name string) (Tokenizer, error) {
	switch name {
	case ByteName:
		return Byte{}, nil
	case GPT2Name, "r50k_base":
		return newGPT2(), nil
	}
	return nil, fmt.Errorf("unknown tokenizer %q: valid names are %s", name, strings.Join(Names(), ", "))
}
