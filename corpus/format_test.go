package corpus

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// llmcBytes lays out an llm.c shard field by field from the documented
// layout, independently of the package's writer.
func llmcBytes(magic, version, count int32, tokens []uint16) []byte {
	var b []byte
	for i := 0; i < 256; i++ {
		v := int32(0)
		switch i {
		case 0:
			v = magic
		case 1:
			v = version
		case 2:
			v = count
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	for _, t := range tokens {
		b = append(b, byte(t), byte(t>>8))
	}
	return b
}

func nanoBytes(tokens []uint16) []byte {
	var b []byte
	for _, t := range tokens {
		b = append(b, byte(t&0xff), byte(t>>8))
	}
	return b
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadShard(t *testing.T) {
	toks := []uint16{0, 1, 255, 256, 50256, 65535, 7}
	for _, tc := range []struct {
		name   string
		data   []byte
		format Format
		want   []uint16
		err    string // substring of the error; "" for success
	}{
		{"llmc auto", llmcBytes(Magic, 1, 7, toks), Auto, toks, ""},
		{"llmc explicit", llmcBytes(Magic, 1, 7, toks), LLMC, toks, ""},
		{"nanogpt auto", nanoBytes(toks), Auto, toks, ""},
		{"nanogpt explicit", nanoBytes(toks), NanoGPT, toks, ""},
		{"llmc read as nanogpt", llmcBytes(Magic, 1, 7, toks), NanoGPT, nil, ""}, // header becomes tokens
		{"truncated llmc", llmcBytes(Magic, 1, 7, toks)[:HeaderBytes+10], Auto, nil, "file holds 5"},
		{"count larger than file", llmcBytes(Magic, 1, 1000, toks), LLMC, nil, "declares 1000 tokens but the file holds 7"},
		{"trailing data", llmcBytes(Magic, 1, 3, toks), LLMC, nil, "trailing data"},
		{"negative count", llmcBytes(Magic, 1, -1, toks), LLMC, nil, "negative"},
		{"wrong magic", llmcBytes(20240521, 1, 7, toks), LLMC, nil, "magic 20240521"},
		{"wrong version", llmcBytes(Magic, 2, 7, toks), Auto, nil, "version 2"},
		{"short header", llmcBytes(Magic, 1, 7, toks)[:100], Auto, nil, "shorter than the 1024-byte header"},
		{"empty llmc", llmcBytes(Magic, 1, 0, nil), LLMC, nil, "no tokens"},
		{"truncated nanogpt", nanoBytes(toks)[:5], NanoGPT, nil, "odd"},
		{"empty nanogpt", nil, Auto, nil, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, "shard.bin", tc.data)
			sh, err := OpenShard(path, tc.format)
			if tc.err != "" {
				if err == nil {
					sh.Close()
					t.Fatalf("opened; want error containing %q", tc.err)
				}
				if !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "(") {
					t.Fatalf("error %q: want %q, the path and a fix", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sh.Close()
			if tc.want == nil {
				if sh.Len() != len(tc.data)/2 {
					t.Fatalf("len %d, want %d", sh.Len(), len(tc.data)/2)
				}
				return
			}
			var got []uint16
			for i := 0; i < sh.Len(); i++ {
				got = append(got, uint16(sh.At(i)))
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("tokens %v, want %v", got, tc.want)
			}
			if sh.MaxToken() != 65535 {
				t.Fatalf("max token %d", sh.MaxToken())
			}
		})
	}
}

func TestCheckVocab(t *testing.T) {
	dir := t.TempDir()
	train := filepath.Join(dir, "train.bin")
	val := filepath.Join(dir, "val.bin")
	if err := os.WriteFile(train, llmcBytes(Magic, 1, 4, []uint16{1, 2, 300, 4}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(val, nanoBytes([]uint16{5, 50256}), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Open(Options{Train: []string{train}, Val: []string{val}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		vocab int
		err   string
	}{
		{50257, ""},
		{50256, val + ": token 50256 at index 1"},
		{256, train + ": token 300 at index 2"},
		{0, "must be positive"},
	} {
		err := c.CheckVocab(tc.vocab)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("CheckVocab(%d) = %v, want %q", tc.vocab, err, tc.err)
		}
	}
}

func TestWriterIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.bin")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write([]int{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("shard visible before Close: %v", err)
	}
	if err := w.Write([]int{70000}); err == nil {
		t.Fatal("token 70000 written into a uint16 shard")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := llmcBytes(Magic, 1, 3, []uint16{1, 2, 3}); !reflect.DeepEqual(b, want) {
		t.Fatal("written shard differs from the documented layout")
	}
	w, err = Create(filepath.Join(dir, "dropped.bin"))
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only s.bin", len(ents))
	}
}
