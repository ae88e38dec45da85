package checkpoint

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// flatState returns a full-length state whose values say where they are
// (params[i] = i + 0.25, adam_m = -i, adam_v = i/7), so that a value read
// from the wrong place is visible.
func flatState(total int) State {
	st := State{Params: make([]float32, total), AdamM: make([]float32, total), AdamV: make([]float32, total)}
	for i := range total {
		st.Params[i] = float32(i) + 0.25
		st.AdamM[i] = -float32(i)
		st.AdamV[i] = float32(i) / 7
	}
	return st
}

// evenRanges splits [0,total) into world contiguous ranges, the first ones
// one longer when it does not divide.
func evenRanges(total, world int) [][2]int {
	out := make([][2]int, world)
	lo := 0
	for r := range world {
		n := total / world
		if r < total%world {
			n++
		}
		out[r] = [2]int{lo, lo + n}
		lo += n
	}
	return out
}

const testConfig = `{"model": "mod-tiny", "layout": {"tensors": [{"name": "w", "shape": [2, 3], "offset": 0}], "total": 6}}`

// writeCheckpoint writes every shard of one checkpoint of flat, commits the
// manifest to disk and returns it.
func writeCheckpoint(t testing.TB, store *DirStore, job string, step int64, gen uint64, ranges [][2]int, flat State) *Manifest {
	t.Helper()
	ctx := context.Background()
	total := len(flat.Params)
	var infos []ShardInfo
	for r, rg := range ranges {
		meta := ShardMeta{Job: job, Step: step, Generation: gen, Rank: r, World: len(ranges),
			Lo: rg[0], Hi: rg[1], Total: total, Config: json.RawMessage(testConfig)}
		info, err := store.WriteShard(ctx, meta, subState(flat, rg[0], rg[1]))
		if err != nil {
			t.Fatalf("write shard %d: %v", r, err)
		}
		infos = append(infos, info)
	}
	m, err := NewManifest(job, step, gen, total, json.RawMessage(testConfig), infos)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func newTestStore(t testing.TB) *DirStore {
	t.Helper()
	s, err := NewDirStore(filepath.Join(t.TempDir(), "ckpt"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sameBits reports whether a and b hold bit-identical floats.
func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustWrite(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
