package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestLoadRangeReshards writes a checkpoint with one world size and loads it
// back with others, each new range spanning parts of several old shards.
func TestLoadRangeReshards(t *testing.T) {
	const total = 1001
	store := newTestStore(t)
	flat := flatState(total)
	oldRanges := [][2]int{{0, 100}, {100, 100}, {100, 650}, {650, 1001}} // uneven, one empty
	m := writeCheckpoint(t, store, "reshard", 10, 0, oldRanges, flat)
	ctx := context.Background()
	for _, newWorld := range []int{1, 3, 7} {
		for _, opts := range []LoadOptions{{}, {SkipChecksums: true}} {
			for _, rg := range evenRanges(total, newWorld) {
				lo, hi := rg[0], rg[1]
				got := State{Params: make([]float32, hi-lo), AdamM: make([]float32, hi-lo), AdamV: make([]float32, hi-lo)}
				if err := store.LoadRange(ctx, m, lo, hi, got, opts); err != nil {
					t.Fatalf("N'=%d %+v [%d,%d): %v", newWorld, opts, lo, hi, err)
				}
				want := subState(flat, lo, hi)
				for i, g := range got.tensors() {
					if !sameBits(g, want.tensors()[i]) {
						t.Fatalf("N'=%d %+v [%d,%d): %s wrong", newWorld, opts, lo, hi, tensorNames()[i])
					}
				}
			}
		}
	}
}

func TestLoadParamsOnly(t *testing.T) {
	store := newTestStore(t)
	flat := flatState(64)
	m := writeCheckpoint(t, store, "params", 1, 0, evenRanges(64, 4), flat)
	got := make([]float32, 64)
	if err := store.LoadRange(context.Background(), m, 0, 64, State{Params: got}, LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	if !sameBits(got, flat.Params) {
		t.Fatal("full parameter vector differs")
	}
}

func TestLoadRangeChecksOnlyShardsItUses(t *testing.T) {
	store := newTestStore(t)
	flat := flatState(40)
	m := writeCheckpoint(t, store, "used", 1, 0, evenRanges(40, 4), flat) // ranks own 10 each
	flipByte(t, store.ShardPath(m, 3), -1)                                // damage the last shard's data
	ctx := context.Background()
	dst := make([]float32, 15)
	if err := store.LoadRange(ctx, m, 5, 20, State{Params: dst}, LoadOptions{}); err != nil {
		t.Errorf("load not touching rank 3 failed: %v", err)
	}
	err := store.LoadRange(ctx, m, 25, 40, State{Params: dst}, LoadOptions{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "shard 3") {
		t.Errorf("load through damaged rank 3 = %v, want a checksum error naming shard 3", err)
	}
	// Without checksums a data flip outside the bytes read goes unnoticed,
	// but a damaged header is still caught.
	flipByte(t, store.ShardPath(m, 2), 30)
	err = store.LoadRange(ctx, m, 20, 30, State{Params: make([]float32, 10)}, LoadOptions{SkipChecksums: true})
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("SkipChecksums load of a shard with a damaged header = %v", err)
	}
}

func TestLoadRangeRejectsBadArguments(t *testing.T) {
	store := newTestStore(t)
	m := writeCheckpoint(t, store, "args", 1, 0, evenRanges(10, 2), flatState(10))
	tests := []struct {
		name   string
		lo, hi int
		dst    State
	}{
		{"past total", 5, 11, State{Params: make([]float32, 6)}},
		{"reversed", 6, 5, State{Params: make([]float32, 0)}},
		{"wrong length", 0, 4, State{Params: make([]float32, 5)}},
		{"moment wrong length", 0, 4, State{Params: make([]float32, 4), AdamV: make([]float32, 3)}},
		{"nothing to load", 0, 4, State{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := store.LoadRange(context.Background(), m, tt.lo, tt.hi, tt.dst, LoadOptions{}); err == nil {
				t.Fatal("LoadRange accepted it")
			}
		})
	}
}

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	r     *bytes.Reader
	bytes int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes += int64(n)
	return n, err
}

func TestReadRangeReadsOnlyWhatItNeeds(t *testing.T) {
	store := newTestStore(t)
	m := writeCheckpoint(t, store, "ra", 1, 0, evenRanges(1000, 2), flatState(1000))
	file := mustRead(t, store.ShardPath(m, 1)) // range [500,1000)
	cr := &countingReaderAt{r: bytes.NewReader(file)}
	sf, err := newShardFile(cr, int64(len(file)), "mem")
	if err != nil {
		t.Fatal(err)
	}
	afterHeader := cr.bytes
	dst := make([]float32, 30)
	if err := sf.ReadRange(TensorAdamV, 610, 640, dst); err != nil {
		t.Fatal(err)
	}
	if read := cr.bytes - afterHeader; read != 4*30 {
		t.Errorf("read %d bytes for 30 floats", read)
	}
	if !sameBits(dst, flatState(1000).AdamV[610:640]) {
		t.Error("wrong values")
	}
	if err := sf.ReadRange(TensorAdamV, 490, 510, make([]float32, 20)); err == nil {
		t.Error("read outside the shard's range succeeded")
	}
	if err := sf.ReadRange("grads", 600, 610, make([]float32, 10)); err == nil {
		t.Error("read of an unknown tensor succeeded")
	}
}
