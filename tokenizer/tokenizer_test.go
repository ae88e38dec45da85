package tokenizer

import (
	"reflect"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		vocab      int
		eot        int
		hasEOT     bool
	}{
		{"byte", "byte", 256, 0, false},
		{"gpt2", "gpt2", 50257, 50256, true},
		{"r50k_base", "gpt2", 50257, 50256, true},
	} {
		tok, err := New(tc.name)
		if err != nil {
			t.Fatalf("New(%q): %v", tc.name, err)
		}
		eot, ok := tok.EOT()
		if tok.Name() != tc.want || tok.VocabSize() != tc.vocab || eot != tc.eot || ok != tc.hasEOT {
			t.Errorf("New(%q) = %s vocab %d eot (%d,%v)", tc.name, tok.Name(), tok.VocabSize(), eot, ok)
		}
	}
	_, err := New("cl100k")
	if err == nil || !strings.Contains(err.Error(), "byte, gpt2") {
		t.Errorf("New(cl100k) error %v does not name the valid tokenizers", err)
	}
}

func TestKnownIDs(t *testing.T) {
	// Ids from OpenAI's tiktoken (r50k_base / GPT-2).
	gpt2, _ := New("gpt2")
	for _, tc := range []struct {
		tok  Tokenizer
		text string
		want []int
	}{
		{gpt2, "Hello world", []int{15496, 995}},
		{gpt2, " the", []int{262}},
		{gpt2, "hello world!", []int{31373, 995, 0}},
		{gpt2, "\n\n", []int{628}},
		{gpt2, "<|endoftext|>", []int{27, 91, 437, 1659, 5239, 91, 29}},
		{Byte{}, "Hi\n", []int{72, 105, 10}},
	} {
		if got := tc.tok.Encode([]byte(tc.text)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s.Encode(%q) = %v, want %v", tc.tok.Name(), tc.text, got, tc.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	texts := []string{
		"",
		"Hello world",
		"First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
		"unicode: naïve café, 日本語, emoji 🙂, tabs\tand  double  spaces   ",
		"numbers 1234567 and punctuation!?;: it's they're we'll",
	}
	for _, name := range Names() {
		tok, _ := New(name)
		for _, s := range texts {
			ids := tok.Encode([]byte(s))
			for _, id := range ids {
				if id < 0 || id >= tok.VocabSize() {
					t.Fatalf("%s: id %d outside vocab %d", name, id, tok.VocabSize())
				}
			}
			if got := tok.Decode(ids); got != s {
				t.Errorf("%s round trip of %q gave %q", name, s, got)
			}
		}
	}
}

func TestByteIsIdentityOnAllBytes(t *testing.T) {
	var all []byte
	for b := 0; b < 256; b++ {
		all = append(all, byte(b))
	}
	ids := Byte{}.Encode(all)
	for i, id := range ids {
		if id != i {
			t.Fatalf("byte %d encoded as %d", i, id)
		}
	}
	if (Byte{}).Decode(ids) != string(all) {
		t.Fatal("byte round trip of all 256 bytes failed")
	}
}

func TestDecodeBadIDs(t *testing.T) {
	gpt2, _ := New("gpt2")
	for _, tc := range []struct {
		tok  Tokenizer
		ids  []int
		want string
	}{
		{gpt2, []int{15496, 50256, 995}, "Hello<|endoftext|> world"},
		{gpt2, []int{15496, -1, 60000}, "Hello\uFFFD\uFFFD"},
		{Byte{}, []int{72, 256, -3}, "H\uFFFD\uFFFD"},
	} {
		if got := tc.tok.Decode(tc.ids); got != tc.want {
			t.Errorf("%s.Decode(%v) = %q, want %q", tc.tok.Name(), tc.ids, got, tc.want)
		}
	}
}
