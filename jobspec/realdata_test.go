package jobspec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modcoord/modcoord/corpus"
	"github.com/modcoord/modcoord/tokenizer"
)

// TestParseDataFields covers the spec fields that name a job's data and
// where it starts: tokenizer, shards, eval_windows, init_from.
func TestParseDataFields(t *testing.T) {
	valid := string(readValidSpec(t))
	edit := func(old, new string) string {
		if !strings.Contains(valid, old) {
			t.Fatalf("test spec has no %q", old)
		}
		return strings.Replace(valid, old, new, 1)
	}
	const gpt2Model = "vocab: 50304, d_model: 128"
	tests := []struct {
		name, spec string
		want       string // "" means valid
	}{
		{"defaults", valid, ""},
		{"gpt2 with a gpt2 vocab", edit("d_model: 128", gpt2Model) + "tokenizer: gpt2\n", ""},
		{"gpt2 with the byte vocab", valid + "tokenizer: gpt2\n", "tokenizer: gpt2 has 50257 tokens but model.vocab is 256"},
		{"unknown tokenizer", valid + "tokenizer: sentencepiece\n", `tokenizer: "sentencepiece" is not a tokenizer`},
		{"shards", edit("data: testdata/job.yaml", "shards: {train: [a/train_0.bin, a/train_1.bin], val: [a/val_0.bin], format: llmc}"), ""},
		{"shards and data", valid + "shards: {train: [a.bin], val: [b.bin]}\n", "data: give either data"},
		{"shards without val", edit("data: testdata/job.yaml", "shards: {train: [a.bin]}"), "shards.val: required"},
		{"shard outside the root", edit("data: testdata/job.yaml", "shards: {train: [../a.bin], val: [b.bin]}"), `shards.train[0]: "../a.bin" has a ".." component`},
		{"shard format unknown", edit("data: testdata/job.yaml", "shards: {train: [a.bin], val: [b.bin], format: npy}"), "shards.format"},
		{"shards unknown field", edit("data: testdata/job.yaml", "shards: {train: [a.bin], val: [b.bin], test: [c.bin]}"), "shards.test: unknown field"},
		{"eval_windows", valid + "eval_windows: 8\n", ""},
		{"eval_windows negative", valid + "eval_windows: -1\n", "eval_windows: -1 is out of range"},
		{"init_from", valid + "init_from: {checkpoint: job-000001, optimizer: true}\n", ""},
		{"init_from absolute", valid + "init_from: {checkpoint: /etc}\n", `init_from.checkpoint: "/etc" is absolute`},
		{"init_from empty", valid + "init_from: {optimizer: true}\n", "init_from.checkpoint: required"},
		{"init_from unknown field", valid + "init_from: {checkpoint: j, weights: true}\n", "init_from.weights: unknown field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := Parse([]byte(tc.spec), Limits{WorkerMemoryBytes: 1 << 40})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v\n%s", err, tc.spec)
			case tc.want == "":
				if spec.Tokenizer == "" || spec.EvalWindows < 1 {
					t.Errorf("defaults not filled: tokenizer %q, eval_windows %d", spec.Tokenizer, spec.EvalWindows)
				}
			case err == nil:
				t.Fatalf("accepted, want %q:\n%s", tc.want, tc.spec)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

// TestOpenCorpus opens each kind of data under a data root: a text file
// (bit-identical to corpus.FromText), a prepared directory, explicit
// shards, and refuses a tokenizer that differs from the prepared one, a
// text file with gpt2, a shard symlinked out of the root, and a manifest
// naming a file outside its directory.
func TestOpenCorpus(t *testing.T) {
	root := t.TempDir()
	text := []byte(strings.Repeat("To be, or not to be, that is the question. ", 200))
	if err := os.WriteFile(filepath.Join(root, "text.txt"), text, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"byte", "gpt2"} {
		tk, _ := tokenizer.New(tok)
		if _, err := corpus.Prepare(corpus.PrepareOptions{Inputs: []string{filepath.Join(root, "text.txt")}, OutDir: filepath.Join(root, tok), Tokenizer: tk, ShardTokens: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "val.bin"), make([]byte, 64), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "val.bin"), filepath.Join(root, "escape.bin")); err != nil {
		t.Fatal(err)
	}
	mb, err := os.ReadFile(filepath.Join(root, "byte", corpus.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := corpus.ParseManifest(mb, "manifest")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Train) < 2 {
		t.Fatalf("want several training shards, got %v", m.Train)
	}
	var trainShards, valShards []string
	for _, n := range m.Train {
		trainShards = append(trainShards, "byte/"+n)
	}
	for _, n := range m.Val {
		valShards = append(valShards, "byte/"+n)
	}
	base, err := Parse(readValidSpec(t), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	base.Model.SeqLen = 16
	gpt2 := base
	gpt2.Tokenizer, gpt2.Model.Vocab = "gpt2", 50304
	with := func(s Spec, f func(*Spec)) Spec { f(&s); return s }
	tests := []struct {
		name string
		spec Spec
		want string // "" means it opens
	}{
		{"text", with(base, func(s *Spec) { s.Data = "text.txt" }), ""},
		{"prepared byte directory", with(base, func(s *Spec) { s.Data = "byte" }), ""},
		{"prepared gpt2 directory", with(gpt2, func(s *Spec) { s.Data = "gpt2" }), ""},
		{"explicit shards", with(base, func(s *Spec) {
			s.Data, s.Shards = "", &Shards{Train: trainShards, Val: valShards}
		}), ""},
		{"gpt2 directory, byte spec", with(base, func(s *Spec) { s.Data = "gpt2" }), "tokenizer: the spec says byte but the corpus"},
		{"byte directory, gpt2 spec", with(gpt2, func(s *Spec) { s.Data = "byte" }), "tokenizer: the spec says gpt2"},
		{"text file, gpt2 spec", with(gpt2, func(s *Spec) { s.Data = "text.txt" }), "tokenizer: data \"text.txt\" is a text file"},
		{"gpt2 shards, small vocab", with(base, func(s *Spec) {
			s.Data, s.Shards = "", &Shards{Train: []string{"gpt2/train_000000.bin"}, Val: []string{"gpt2/val_000000.bin"}}
		}), "model.vocab"},
		{"shard symlinked out of the root", with(base, func(s *Spec) {
			s.Data, s.Shards = "", &Shards{Train: []string{"byte/train_000000.bin"}, Val: []string{"escape.bin"}}
		}), `"escape.bin" cannot be opened inside the data root`},
		{"missing directory", with(base, func(s *Spec) { s.Data = "nope" }), "does not exist under the data root"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.spec.OpenCorpus(root)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("OpenCorpus: %v, want an error containing %q", err, tc.want)
				}
				if strings.Contains(err.Error(), root) {
					t.Errorf("error %q names the data root's absolute path", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc.spec.Data == "text.txt" || tc.spec.Data == "byte" || tc.spec.Shards != nil {
				// The same text, split the same way: the same windows.
				ref, _ := corpus.FromText(text)
				a, b := make([]int32, 4*16), make([]int32, 4*16)
				ra, rb := make([]int32, 4*16), make([]int32, 4*16)
				for step := range int64(5) {
					c.Batch(7, step, 0, 4, 16, a, ra)
					ref.Batch(7, step, 0, 4, 16, b, rb)
					if !equal(a, b) || !equal(ra, rb) {
						t.Fatalf("step %d: batch differs from the text's", step)
					}
				}
			}
		})
	}
	// A manifest naming a file outside its directory is refused.
	bad := filepath.Join(root, "bad")
	os.MkdirAll(bad, 0o755)
	os.WriteFile(filepath.Join(bad, corpus.ManifestName), []byte(`{"tokenizer":"byte","train":["../text.txt"],"val":["v.bin"]}`), 0o644)
	if _, err := with(base, func(s *Spec) { s.Data = "bad" }).OpenCorpus(root); err == nil || !strings.Contains(err.Error(), "manifest") {
		t.Fatalf("manifest pointing outside its directory: %v", err)
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
