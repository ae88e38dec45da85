package tokenizer

import "unicode/utf8"

// ByteName is the name of the byte-level tokenizer.
const ByteName = "byte"

// Byte is the byte-level tokenizer: token i is byte i. It is the
// tokenisation mod.Dataset has always used.
type Byte struct{}

func (Byte) Name() string     { return ByteName }
func (Byte) VocabSize() int   { return 256 }
func (Byte) EOT() (int, bool) { return 0, false }

func (Byte) Encode(text []byte) []int {
	out := make([]int, len(text))
	for i, b := range text {
		out[i] = int(b)
	}
	return out
}

func (Byte) Decode(tokens []int) string {
	buf := make([]byte, 0, len(tokens))
	for _, t := range tokens {
		if t < 0 || t > 255 {
			buf = utf8.AppendRune(buf, utf8.RuneError)
			continue
		}
		buf = append(buf, byte(t))
	}
	return string(buf)
}
