package corpus

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/tokenizer"
)

func mustTok(t testing.TB, name string) tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// streamTokens reads a whole stream back.
func streamTokens(s source) []int {
	raw := make([]int32, s.Len())
	s.read(0, raw)
	out := make([]int, len(raw))
	for i, v := range raw {
		out[i] = int(v)
	}
	return out
}

// TestPrepareBytesMatchesDataset: a single text file prepared with the
// byte tokenizer and the default split is mod.NewDataset's corpus.
func TestPrepareBytesMatchesDataset(t *testing.T) {
	text := shakespeare(t)
	in := writeTemp(t, "input.txt", text)
	out := t.TempDir()
	var lines bytes.Buffer
	m, err := Prepare(PrepareOptions{Inputs: []string{in}, OutDir: out, Tokenizer: mustTok(t, "byte"), ShardTokens: 300_000, Progress: ProgressLines(&lines)})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Train) != 4 || len(m.Val) != 1 {
		t.Fatalf("manifest lists %d train and %d val shards, want 4 and 1", len(m.Train), len(m.Val))
	}
	if !strings.Contains(lines.String(), "100%") {
		t.Fatalf("progress never reached 100%%:\n%s", lines.String())
	}
	c, err := OpenDir(out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ds, _ := mod.NewDataset(text)
	if c.Tokenizer() != "byte" || c.VocabSize() != 256 {
		t.Fatalf("corpus reports tokenizer %q vocab %d", c.Tokenizer(), c.VocabSize())
	}
	if !reflect.DeepEqual(streamTokens(c.train), byteTokens(ds.Train)) || !reflect.DeepEqual(streamTokens(c.val), byteTokens(ds.Val)) {
		t.Fatal("prepared streams differ from mod.NewDataset's split")
	}
}

// TestPrepareGPT2 checks that chunked tokenisation equals tokenising each
// whole document, that EOT separates documents, that a directory is read
// in sorted order, and that named validation files make the val stream.
func TestPrepareGPT2(t *testing.T) {
	gpt2 := mustTok(t, "gpt2")
	eot, _ := gpt2.EOT()
	big := shakespeare(t) // over chunkBytes, so it is cut into chunks
	dir := t.TempDir()
	docs := map[string][]byte{
		"b/2.txt": []byte("Second document, in a subdirectory.\n"),
		"a.txt":   big,
		"c.txt":   []byte("Third:  spaces   and\n\n\nnewlines  "),
	}
	for name, b := range docs {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	val := writeTemp(t, "val.txt", []byte("Held-out text.\nMore of it."))
	out := t.TempDir()
	m, err := Prepare(PrepareOptions{Inputs: []string{dir}, ValInputs: []string{val}, OutDir: out, Tokenizer: gpt2, ShardTokens: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for k, name := range []string{"a.txt", "b/2.txt", "c.txt"} {
		if k > 0 {
			want = append(want, eot)
		}
		want = append(want, gpt2.Encode(docs[name])...)
	}
	c, err := OpenDir(out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := streamTokens(c.train)
	if !reflect.DeepEqual(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("train stream (%d tokens) differs from whole-document encoding (%d tokens) at token %d", len(got), len(want), i)
	}
	if v := streamTokens(c.val); !reflect.DeepEqual(v, gpt2.Encode([]byte("Held-out text.\nMore of it."))) {
		t.Fatalf("val stream %v", v)
	}
	if m.Tokenizer != "gpt2" || m.VocabSize != 50257 || int(m.TrainTokens) != len(want) {
		t.Fatalf("manifest %+v", m)
	}
	if err := c.CheckVocab(50257); err != nil {
		t.Fatal(err)
	}
}

// TestPrepareSplitAndBin: without validation files the tail of the input
// validates, and nanoGPT .bin inputs are converted to llm.c shards.
func TestPrepareSplitAndBin(t *testing.T) {
	toks := make([]uint16, 10_000)
	for i := range toks {
		toks[i] = uint16(i*7919) % 50257
	}
	in := writeTemp(t, "fineweb_train.bin", nanoBytes(toks))
	out := t.TempDir()
	m, err := Prepare(PrepareOptions{Inputs: []string{in}, OutDir: out, Tokenizer: mustTok(t, "gpt2"), ValFraction: 0.25})
	if err != nil {
		t.Fatal(err)
	}
	if m.TrainTokens != 7500 || m.ValTokens != 2500 {
		t.Fatalf("split %d/%d, want 7500/2500", m.TrainTokens, m.ValTokens)
	}
	c, err := OpenDir(out)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	all := append(streamTokens(c.train), streamTokens(c.val)...)
	for i, v := range all {
		if v != int(toks[i]) {
			t.Fatalf("token %d is %d, want %d", i, v, toks[i])
		}
	}
	// A byte tokenizer cannot take GPT-2 ids.
	_, err = Prepare(PrepareOptions{Inputs: []string{in}, OutDir: t.TempDir(), Tokenizer: mustTok(t, "byte")})
	if err == nil || !strings.Contains(err.Error(), in) {
		t.Fatalf("byte prepare of GPT-2 tokens: %v", err)
	}
}

func TestPrepareRefuses(t *testing.T) {
	tok := mustTok(t, "byte")
	txt := writeTemp(t, "x.txt", []byte("tiny"))
	for _, tc := range []struct {
		name string
		o    PrepareOptions
		err  string
	}{
		{"no tokenizer", PrepareOptions{Inputs: []string{txt}}, "no tokenizer"},
		{"missing input", PrepareOptions{Inputs: []string{"/nonexistent/in.txt"}, Tokenizer: tok}, "/nonexistent/in.txt"},
		{"no inputs", PrepareOptions{Tokenizer: tok}, "no input files"},
		{"bad fraction", PrepareOptions{Inputs: []string{txt}, Tokenizer: tok, ValFraction: 1}, "fraction"},
		{"empty val", PrepareOptions{Inputs: []string{txt}, Tokenizer: tok}, "0 validation tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.OutDir = t.TempDir()
			_, err := Prepare(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
		})
	}
}
