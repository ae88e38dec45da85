package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validShard writes a small shard and returns its path and bytes.
func validShard(t testing.TB) (string, []byte) {
	t.Helper()
	store := newTestStore(t)
	meta := ShardMeta{Job: "c", Step: 9, Generation: 2, Rank: 1, World: 2, Lo: 4, Hi: 10, Total: 10, Config: []byte(`{"k":"v"}`)}
	info, err := store.WriteShard(context.Background(), meta, subState(flatState(10), 4, 10))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(store.StepDir("c", 9, 2), info.File)
	return path, mustRead(t, path)
}

// rewriteHeader returns file with its JSON header replaced by edit's result,
// re-padded and with the length field updated, and the same data.
func rewriteHeader(t testing.TB, file []byte, edit func(string) string) []byte {
	t.Helper()
	n := binary.LittleEndian.Uint64(file[:8])
	header := strings.TrimRight(string(file[8:8+n]), " ")
	edited := edit(header)
	if edited == header {
		t.Fatalf("edit changed nothing in %s", header)
	}
	for len(edited)%8 != 0 {
		edited += " "
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(edited)))
	out = append(out, edited...)
	return append(out, file[8+n:]...)
}

func replace(old, new string) func(string) string {
	return func(s string) string { return strings.Replace(s, old, new, 1) }
}

func TestOpenShardRejectsDamage(t *testing.T) {
	path, good := validShard(t)
	n := binary.LittleEndian.Uint64(good[:8])
	tests := []struct {
		name    string
		damage  func(testing.TB, []byte) []byte
		problem string // must appear in the error
	}{
		{"empty file", func(t testing.TB, b []byte) []byte { return nil }, "too short"},
		{"cut inside length", func(t testing.TB, b []byte) []byte { return b[:5] }, "too short"},
		{"header length over limit", func(t testing.TB, b []byte) []byte {
			binary.LittleEndian.PutUint64(b, MaxHeaderBytes+1)
			return b
		}, "over the 104857600-byte limit"},
		{"header length past end", func(t testing.TB, b []byte) []byte {
			binary.LittleEndian.PutUint64(b, uint64(len(b)))
			return b
		}, "only"},
		{"cut inside header", func(t testing.TB, b []byte) []byte { return b[:8+n/2] }, "truncated"},
		{"cut inside data", func(t testing.TB, b []byte) []byte { return b[:len(b)-10] }, "truncated by 10 bytes"},
		{"trailing bytes", func(t testing.TB, b []byte) []byte { return append(b, 0, 0, 0, 0) }, "4 unexpected bytes"},
		{"header not JSON", func(t testing.TB, b []byte) []byte { b[8] = 'x'; return b }, "does not start with '{'"},
		{"broken JSON", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"dtype":"F32"`, `"dtype":F32`))
		}, "not well-formed JSON"},
		{"garbage in padding", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, func(s string) string { return s + "x" })
		}, "only space padding"},
		{"newline padding", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, func(s string) string { return s + "\n" })
		}, "only space padding"},
		{"invalid UTF-8", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"job":"c"`, "\"job\":\"\xff\""))
		}, "UTF-8"},
		{"dtype F16", func(t testing.TB, b []byte) []byte { return rewriteHeader(t, b, replace(`"F32"`, `"F16"`)) }, `dtype "F16"`},
		{"two dimensions", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"shape":[6]`, `"shape":[2,3]`))
		}, "one dimension"},
		{"shape disagrees with range", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"hi":"10"`, `"hi":"9"`))
		}, "holds 5 elements"},
		{"offsets overlap", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"data_offsets":[24,48]`, `"data_offsets":[20,44]`))
		}, "overlaps"},
		{"hole between tensors", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"data_offsets":[24,48]`, `"data_offsets":[28,52]`))
		}, "hole"},
		{"offsets not spanning shape", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"data_offsets":[24,48]`, `"data_offsets":[24,44]`))
		}, "do not span"},
		{"offsets reversed", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"data_offsets":[24,48]`, `"data_offsets":[48,24]`))
		}, "do not span"},
		{"three offsets", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"data_offsets":[24,48]`, `"data_offsets":[24,48,72]`))
		}, "must be [begin, end]"},
		{"negative offset", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"data_offsets":[0,24]`, `"data_offsets":[-1,24]`))
		}, "malformed"},
		{"offset past end of file", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"data_offsets":[48,72]`, `"data_offsets":[4800,4824]`))
		}, "past the end"},
		{"unknown field in tensor", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"dtype":"F32"`, `"dtype":"F32","x":1`))
		}, "malformed"},
		{"missing tensor", func(t testing.TB, b []byte) []byte { return rewriteHeader(t, b, replace(`"adam_v"`, `"adam_w"`)) }, `unexpected tensor "adam_w"`},
		{"duplicate key", func(t testing.TB, b []byte) []byte { return rewriteHeader(t, b, replace(`"adam_v"`, `"adam_m"`)) }, `duplicate key "adam_m"`},
		{"no metadata", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"__metadata__"`, `"__meta__"`))
		}, "no __metadata__"},
		{"metadata not strings", func(t testing.TB, b []byte) []byte { return rewriteHeader(t, b, replace(`"step":"9"`, `"step":9`)) }, `"step" is not a string`},
		{"metadata key missing", func(t testing.TB, b []byte) []byte { return rewriteHeader(t, b, replace(`"world"`, `"wrld"`)) }, `lacks "world"`},
		{"metadata number malformed", func(t testing.TB, b []byte) []byte { return rewriteHeader(t, b, replace(`"step":"9"`, `"step":"09"`)) }, "not a decimal integer"},
		{"newer format version", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"format_version":"1"`, `"format_version":"2"`))
		}, "different modcoord version"},
		{"not our format", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"format":"modcoord.checkpoint"`, `"format":"pt"`))
		}, `format is "pt"`},
		{"rank outside world", func(t testing.TB, b []byte) []byte { return rewriteHeader(t, b, replace(`"rank":"1"`, `"rank":"2"`)) }, "inconsistent"},
		{"bad data checksum text", func(t testing.TB, b []byte) []byte {
			return rewriteHeader(t, b, replace(`"data_sha256":"`, `"data_sha256":"X`))
		}, "64 lowercase hex"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			damaged := tt.damage(t, bytes.Clone(good))
			mustWrite(t, path, damaged)
			_, err := OpenShard(path)
			if err == nil {
				t.Fatal("OpenShard accepted the damaged file")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("error does not match ErrCorrupt: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.problem) || !strings.Contains(msg, path) || !strings.Contains(msg, "; ") {
				t.Errorf("error should name the file, say %q and give a fix; got: %v", tt.problem, err)
			}
		})
	}
}

func TestVerifyDataDetectsFlippedDataByte(t *testing.T) {
	path, good := validShard(t)
	b := bytes.Clone(good)
	b[len(b)-1] ^= 0x01
	mustWrite(t, path, b)
	sf, err := OpenShard(path)
	if err != nil {
		t.Fatalf("a data flip must not break the header: %v", err)
	}
	defer sf.Close()
	err = sf.VerifyData(context.Background())
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "data sha256") {
		t.Fatalf("VerifyData = %v, want a data checksum error", err)
	}
}

func TestOpenShardMissingFile(t *testing.T) {
	_, err := OpenShard(filepath.Join(t.TempDir(), "nope.safetensors"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("OpenShard = %v, want a missing-file error", err)
	}
}

// TestVerifyDetectsEveryByteFlip flips each byte of a small checkpoint's
// shard in turn, header and data alike; Verify must reject every one.
func TestVerifyDetectsEveryByteFlip(t *testing.T) {
	store := newTestStore(t)
	m := writeCheckpoint(t, store, "flip", 1, 0, evenRanges(8, 2), flatState(8))
	path := store.ShardPath(m, 1)
	good := mustRead(t, path)
	ctx := context.Background()
	for i := range good {
		// Each bit position in turn: a high bit can make invalid UTF-8 or a
		// huge length, a low one a plausible wrong value.
		mask := byte(1 << (i % 8))
		b := bytes.Clone(good)
		b[i] ^= mask
		mustWrite(t, path, b)
		err := store.Verify(ctx, m)
		var ve *VerifyError
		if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Rank != 1 || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip 0x%02x at byte %d of %d: Verify = %v", mask, i, len(good), err)
		}
	}
	mustWrite(t, path, good)
	if err := store.Verify(ctx, m); err != nil {
		t.Fatalf("restored file fails: %v", err)
	}
}

func TestVerifyReportsEachDamageKind(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		damage  func(t *testing.T, store *DirStore, m *Manifest) *Manifest
		problem string
		notFile bool // errors.Is(err, fs.ErrNotExist) rather than ErrCorrupt
	}{
		{"flipped data byte", func(t *testing.T, s *DirStore, m *Manifest) *Manifest {
			flipByte(t, s.ShardPath(m, 0), -5)
			return m
		}, "tensor data sha256", false},
		{"flipped header byte", func(t *testing.T, s *DirStore, m *Manifest) *Manifest {
			flipByte(t, s.ShardPath(m, 0), 20)
			return m
		}, "header", false},
		{"truncated", func(t *testing.T, s *DirStore, m *Manifest) *Manifest {
			p := s.ShardPath(m, 0)
			if err := os.Truncate(p, m.Shards[0].Bytes-3); err != nil {
				t.Fatal(err)
			}
			return m
		}, "(truncated)", false},
		{"deleted", func(t *testing.T, s *DirStore, m *Manifest) *Manifest {
			if err := os.Remove(s.ShardPath(m, 0)); err != nil {
				t.Fatal(err)
			}
			return m
		}, "missing", true},
		{"shard of another step in its place", func(t *testing.T, s *DirStore, m *Manifest) *Manifest {
			// The manifest was built from a report of the wrong step: sizes
			// and checksums match the file, the metadata does not.
			other := writeCheckpoint(t, s, m.Job, m.Step+1, m.Generation, evenRanges(m.Total, m.World), flatState(m.Total))
			mustWrite(t, s.ShardPath(m, 0), mustRead(t, s.ShardPath(other, 0)))
			bad := *m
			bad.Shards = append([]ShardInfo(nil), m.Shards...)
			bad.Shards[0] = other.Shards[0]
			return &bad
		}, "step=2 (manifest says 1)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newTestStore(t)
			m := writeCheckpoint(t, store, "kinds", 1, 0, evenRanges(30, 3), flatState(30))
			m = tt.damage(t, store, m)
			err := store.Verify(ctx, m)
			var ve *VerifyError
			if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Rank != 0 {
				t.Fatalf("Verify = %v, want one problem in rank 0", err)
			}
			if tt.notFile != errors.Is(err, fs.ErrNotExist) || tt.notFile == errors.Is(err, ErrCorrupt) {
				t.Errorf("wrong error class: %v", err)
			}
			if !strings.Contains(err.Error(), tt.problem) || !strings.Contains(err.Error(), store.ShardPath(m, 0)) {
				t.Errorf("error should name the file and say %q: %v", tt.problem, err)
			}
		})
	}
}

// flipByte flips one bit of the byte at off (negative: from the end).
func flipByte(t testing.TB, path string, off int) {
	t.Helper()
	b := mustRead(t, path)
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0x04
	mustWrite(t, path, b)
}
