package corpus

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/modcoord/modcoord/mod"
)

func shakespeare(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../data/tinyshakespeare.txt")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func byteTokens(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

// batcher is what mod.Dataset and Corpus have in common.
type batcher interface {
	Batch(seed uint64, step int64, lo, hi, seqLen int, tokens, targets []int32)
	ValBatch(lo, hi, seqLen int, tokens, targets []int32)
	ValWindows(seqLen int) int
	CheckSeqLen(seqLen int) error
}

// shardedBytes writes text as mod.NewDataset splits it, the training part
// cut into several shards at arbitrary places, and opens it.
func shardedBytes(t testing.TB, text []byte) *Corpus {
	t.Helper()
	dir := t.TempDir()
	split := len(text) - len(text)/10
	train := text[:split]
	cuts := []int{0, 1, split / 3, split/3 + 17, split - 5, split}
	var o Options
	for k := 0; k+1 < len(cuts); k++ {
		p := filepath.Join(dir, "train_"+string(rune('a'+k))+".bin")
		if err := WriteShard(p, byteTokens(train[cuts[k]:cuts[k+1]])); err != nil {
			t.Fatal(err)
		}
		o.Train = append(o.Train, p)
	}
	p := filepath.Join(dir, "val.bin")
	if err := WriteShard(p, byteTokens(text[split:])); err != nil {
		t.Fatal(err)
	}
	o.Val = []string{p}
	c, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestBatchMatchesDataset draws the same batches from mod.Dataset, from an
// in-memory byte Corpus and from the same bytes in shards, including a
// split of the global batch across workers.
func TestBatchMatchesDataset(t *testing.T) {
	full := shakespeare(t)
	for _, tc := range []struct {
		name   string
		text   []byte
		seqLen int
	}{
		{"shakespeare T=64", full, 64},
		{"shakespeare T=1", full, 1},
		{"small T=8", full[:200], 8},
		{"minimal T=3", full[:50], 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds, err := mod.NewDataset(tc.text)
			if err != nil {
				t.Fatal(err)
			}
			mem, err := FromText(tc.text)
			if err != nil {
				t.Fatal(err)
			}
			impls := []batcher{ds, mem, shardedBytes(t, tc.text)}
			const B = 8
			T := tc.seqLen
			type draw struct{ tok, tgt []int32 }
			get := func(b batcher, seed uint64, step int64, workers int) draw {
				d := draw{make([]int32, B*T), make([]int32, B*T)}
				per := B / workers
				for w := 0; w < workers; w++ {
					lo, hi := w*per, (w+1)*per
					b.Batch(seed, step, lo, hi, T, d.tok[lo*T:hi*T], d.tgt[lo*T:hi*T])
				}
				return d
			}
			for k, b := range impls {
				if err := b.CheckSeqLen(T); err != nil {
					t.Fatalf("impl %d: %v", k, err)
				}
				if b.ValWindows(T) != ds.ValWindows(T) {
					t.Fatalf("impl %d: %d val windows, want %d", k, b.ValWindows(T), ds.ValWindows(T))
				}
			}
			for _, seed := range []uint64{0, 1, 0xdeadbeef} {
				for step := int64(0); step < 20; step++ {
					if step == 10 {
						// Dropping mapped pages must not change what is read.
						if err := impls[2].(*Corpus).Release(); err != nil {
							t.Fatal(err)
						}
					}
					want := get(ds, seed, step, 1)
					for k, b := range impls {
						for _, workers := range []int{1, 2, 8} {
							if got := get(b, seed, step, workers); !reflect.DeepEqual(got, want) {
								t.Fatalf("impl %d seed %d step %d with %d workers: batch differs from mod.Dataset", k, seed, step, workers)
							}
						}
					}
				}
			}
			n := ds.ValWindows(T)
			want := draw{make([]int32, n*T), make([]int32, n*T)}
			ds.ValBatch(0, n, T, want.tok, want.tgt)
			for k, b := range impls {
				got := draw{make([]int32, n*T), make([]int32, n*T)}
				b.ValBatch(0, n/2, T, got.tok[:n/2*T], got.tgt[:n/2*T])
				b.ValBatch(n/2, n, T, got.tok[n/2*T:], got.tgt[n/2*T:])
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("impl %d: validation windows differ from mod.Dataset", k)
				}
			}
		})
	}
}

func TestCheckSeqLen(t *testing.T) {
	c, err := FromText(make([]byte, 100)) // 90 train, 10 val
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		seqLen int
		ok     bool
	}{{0, false}, {1, true}, {9, true}, {10, false}, {88, false}} {
		if err := c.CheckSeqLen(tc.seqLen); (err == nil) != tc.ok {
			t.Errorf("CheckSeqLen(%d) = %v", tc.seqLen, err)
		}
	}
	if _, err := FromText(make([]byte, 19)); err == nil {
		t.Error("FromText accepted 19 bytes, whose last 10% is 1 byte")
	}
}
