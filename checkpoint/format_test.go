package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReadRoundTrip(t *testing.T) {
	tests := []struct {
		name        string
		lo, hi, tot int
		config      string
	}{
		{"empty range", 5, 5, 10, ""},
		{"one element", 0, 1, 1, ""},
		{"odd length with config", 3, 10, 10, testConfig},
		// 12 MB: crosses the 4 MiB read chunk and the 8 MiB pipeline buffer.
		{"several chunks", 100, 100 + 1<<20 + 3, 2 << 20, `{"a":1}`},
	}
	store := newTestStore(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flat := flatState(tt.tot)
			meta := ShardMeta{Job: "rt", Step: 42, Generation: 7, Rank: 1, World: 3, Lo: tt.lo, Hi: tt.hi, Total: tt.tot, Config: json.RawMessage(tt.config)}
			want := subState(flat, tt.lo, tt.hi)
			info, err := store.WriteShard(context.Background(), meta, want)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(store.StepDir("rt", 42, 7), info.File)
			gotMeta, got, err := ReadShard(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if d := gotMeta.mismatch(meta); d != "" {
				t.Errorf("metadata: %s", d)
			}
			for i, g := range got.tensors() {
				if !sameBits(g, want.tensors()[i]) {
					t.Errorf("%s differs after round trip", tensorNames()[i])
				}
			}
			if info.Rank != 1 || info.Lo != tt.lo || info.Hi != tt.hi || info.File != "rank-00001-of-00003.safetensors" {
				t.Errorf("shard info %+v", info)
			}
		})
	}
}

// TestFileFollowsSafetensorsSpec checks the bytes of a shard against the
// safetensors format rules directly, not through our reader.
func TestFileFollowsSafetensorsSpec(t *testing.T) {
	store := newTestStore(t)
	flat := flatState(20)
	meta := ShardMeta{Job: "spec", Step: 3, Rank: 0, World: 1, Lo: 0, Hi: 20, Total: 20, Config: json.RawMessage(testConfig)}
	info, err := store.WriteShard(context.Background(), meta, flat)
	if err != nil {
		t.Fatal(err)
	}
	b := mustRead(t, filepath.Join(store.StepDir("spec", 3, 0), info.File))

	n := binary.LittleEndian.Uint64(b[:8])
	header := b[8 : 8+n]
	data := b[8+n:]
	if (8+n)%8 != 0 {
		t.Errorf("data section starts at %d, not 8-byte aligned", 8+n)
	}
	if header[0] != '{' {
		t.Errorf("header starts with %q", header[0])
	}
	trimmed := bytes.TrimRight(header, " ")
	if trimmed[len(trimmed)-1] != '}' {
		t.Errorf("header padding is not only spaces: %q", header[len(trimmed)-1:])
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(header, &h); err != nil {
		t.Fatal(err)
	}
	var md map[string]string
	if err := json.Unmarshal(h["__metadata__"], &md); err != nil {
		t.Fatalf("__metadata__ is not a string map: %v", err)
	}
	wantMeta := map[string]string{"format": FormatName, "format_version": "1", "job": "spec", "step": "3", "generation": "0",
		"rank": "0", "world": "1", "lo": "0", "hi": "20", "total": "20"}
	for k, v := range wantMeta {
		if md[k] != v {
			t.Errorf("metadata %s = %q, want %q", k, md[k], v)
		}
	}
	if !sameJSON([]byte(md["config"]), []byte(testConfig)) {
		t.Errorf("metadata config = %s", md["config"])
	}
	pos := uint64(0)
	for i, name := range tensorNames() {
		var th struct {
			DType       string   `json:"dtype"`
			Shape       []uint64 `json:"shape"`
			DataOffsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(h[name], &th); err != nil {
			t.Fatal(err)
		}
		if th.DType != "F32" || len(th.Shape) != 1 || th.Shape[0] != 20 || th.DataOffsets[0] != pos || th.DataOffsets[1] != pos+80 {
			t.Errorf("tensor %s = %+v", name, th)
		}
		src := flat.tensors()[i]
		for j := range src {
			if got := math.Float32frombits(binary.LittleEndian.Uint32(data[pos+4*uint64(j):])); got != src[j] {
				t.Fatalf("%s[%d] in file = %v, want %v", name, j, got, src[j])
			}
		}
		pos += 80
	}
	if uint64(len(data)) != pos {
		t.Errorf("data section is %d bytes, tensors cover %d", len(data), pos)
	}
	if len(h) != 4 {
		t.Errorf("header has %d entries, want __metadata__ and 3 tensors", len(h))
	}

	headerSum := sha256.Sum256(b[:8+n])
	dataSum := sha256.Sum256(data)
	switch {
	case info.Bytes != int64(len(b)):
		t.Errorf("info.Bytes = %d, file is %d", info.Bytes, len(b))
	case info.HeaderSHA256 != hex.EncodeToString(headerSum[:]):
		t.Errorf("info.HeaderSHA256 is not the sha256 of the header bytes")
	case info.DataSHA256 != hex.EncodeToString(dataSum[:]) || md["data_sha256"] != info.DataSHA256:
		t.Errorf("data sha256: info %s, metadata %s, actual %x", info.DataSHA256, md["data_sha256"], dataSum)
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	store := newTestStore(t)
	flat := flatState(100)
	var files [2][]byte
	for i := range files {
		meta := ShardMeta{Job: "det", Step: int64(i), Rank: 0, World: 1, Lo: 0, Hi: 100, Total: 100}
		info, err := store.WriteShard(context.Background(), meta, flat)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = mustRead(t, filepath.Join(store.StepDir("det", int64(i), 0), info.File))
	}
	// Only the step differs; the files must differ only in that digit.
	diff := 0
	for i := range files[0] {
		if files[0][i] != files[1][i] {
			diff++
		}
	}
	if len(files[0]) != len(files[1]) || diff != 1 {
		t.Errorf("files of steps 0 and 1 differ in %d bytes (sizes %d, %d), want exactly the step digit", diff, len(files[0]), len(files[1]))
	}
}

func TestWriteShardRejectsBadInput(t *testing.T) {
	store := newTestStore(t)
	good := ShardMeta{Job: "bad", Step: 1, Rank: 0, World: 2, Lo: 0, Hi: 4, Total: 8}
	st := subState(flatState(8), 0, 4)
	tests := []struct {
		name string
		edit func(*ShardMeta, *State)
	}{
		{"job with slash", func(m *ShardMeta, _ *State) { m.Job = "a/b" }},
		{"job dot-dot", func(m *ShardMeta, _ *State) { m.Job = ".." }},
		{"rank out of world", func(m *ShardMeta, _ *State) { m.Rank = 2 }},
		{"range past total", func(m *ShardMeta, _ *State) { m.Hi = 9 }},
		{"negative step", func(m *ShardMeta, _ *State) { m.Step = -1 }},
		{"config not JSON", func(m *ShardMeta, _ *State) { m.Config = json.RawMessage("{") }},
		{"short moments", func(_ *ShardMeta, s *State) { s.AdamV = s.AdamV[:3] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, s := good, st
			tt.edit(&m, &s)
			if _, err := store.WriteShard(context.Background(), m, s); err == nil {
				t.Fatal("WriteShard accepted it")
			}
		})
	}
}

func TestCancelledWriteLeavesNothing(t *testing.T) {
	store := newTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	meta := ShardMeta{Job: "cancel", Step: 1, Rank: 0, World: 1, Lo: 0, Hi: 10, Total: 10}
	if _, err := store.WriteShard(ctx, meta, flatState(10)); err == nil {
		t.Fatal("cancelled write succeeded")
	}
	entries, err := os.ReadDir(store.StepDir("cancel", 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind %s", e.Name())
	}
}
