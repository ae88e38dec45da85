package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"unsafe"
)

func TestPipeWriterKeepsOrderAndPads(t *testing.T) {
	// The stream's byte i is i%251; written in pieces of random length, any
	// reordering, loss or repeat shows.
	const bufSize, flushEvery = 16 * blockAlign, 5 * 16 * blockAlign
	pattern := make([]byte, 3*bufSize+251)
	for i := range pattern {
		pattern[i] = byte(i % 251)
	}
	for _, pad := range []bool{false, true} {
		var out bytes.Buffer
		pool := newBufferPool(pipeDepth, bufSize)
		flushes := 0
		pw := newPipeWriter(&out, func() error { flushes++; return nil }, flushEvery, pool)
		rng := rand.New(rand.NewPCG(1, 2))
		total := 0
		for total < 3*flushEvery+12345 {
			start := total % 251
			piece := pattern[start : start+rng.IntN(3*bufSize)]
			if _, err := pw.Write(piece); err != nil {
				t.Fatal(err)
			}
			total += len(piece)
		}
		if err := pw.close(pad); err != nil {
			t.Fatal(err)
		}
		got := out.Bytes()
		wantLen := total
		if pad {
			wantLen = roundUp(total, blockAlign)
		}
		if len(got) != wantLen {
			t.Fatalf("pad=%v: wrote %d bytes, want %d", pad, len(got), wantLen)
		}
		const step = 251 * 64 // a multiple of the pattern's period, shorter than it
		for off := 0; off < total; off += step {
			end := min(off+step, total)
			if !bytes.Equal(got[off:end], pattern[:end-off]) {
				t.Fatalf("pad=%v: bytes [%d,%d) are wrong", pad, off, end)
			}
		}
		if tail := got[total:]; bytes.Count(tail, []byte{0}) != len(tail) {
			t.Fatalf("pad=%v: padding is not zeros", pad)
		}
		if want := len(got) / flushEvery; flushes != want {
			t.Errorf("pad=%v: flushed %d times for %d bytes, want %d", pad, flushes, len(got), want)
		}
		if len(pool.free) != pipeDepth {
			t.Errorf("pad=%v: %d buffers back in the pool, want %d", pad, len(pool.free), pipeDepth)
		}
	}
}

type failingWriter struct{ after int }

var errDiskFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errDiskFull
	}
	w.after--
	return len(p), nil
}

func TestPipeWriterReportsWriteError(t *testing.T) {
	pw := newPipeWriter(&failingWriter{after: 1}, nil, 0, newBufferPool(pipeDepth, blockAlign))
	chunk := make([]byte, blockAlign)
	var writeErr error
	for i := 0; i < 100 && writeErr == nil; i++ { // far past the failure
		_, writeErr = pw.Write(chunk)
	}
	if writeErr == nil {
		t.Error("the producer was not stopped after the write failed")
	}
	if err := pw.close(false); !errors.Is(err, errDiskFull) {
		t.Fatalf("close = %v, want the write error", err)
	}
}

func TestPipeWriterReportsFlushError(t *testing.T) {
	pw := newPipeWriter(&bytes.Buffer{}, func() error { return errDiskFull }, blockAlign, newBufferPool(pipeDepth, blockAlign))
	chunk := make([]byte, blockAlign)
	for i := 0; i < 100; i++ {
		if _, err := pw.Write(chunk); err != nil {
			break
		}
	}
	if err := pw.close(false); !errors.Is(err, errDiskFull) {
		t.Fatalf("close = %v, want the flush error", err)
	}
}

func TestAlignedBytes(t *testing.T) {
	for _, n := range []int{blockAlign, 3 * blockAlign, pipeBufSize} {
		b := alignedBytes(n)
		if len(b) != n || cap(b) != n || uintptr(unsafe.Pointer(&b[0]))%blockAlign != 0 {
			t.Errorf("alignedBytes(%d): len %d cap %d addr %p", n, len(b), cap(b), &b[0])
		}
	}
}

// TestDirectAndBufferedWritesAgree writes the same shard both ways; the
// files must be identical, byte for byte.
func TestDirectAndBufferedWritesAgree(t *testing.T) {
	for _, n := range []int{0, 1, 1000, 1023, 1024, 1<<20 + 5} { // the last spans two pipeline buffers
		flat := flatState(n + 1)
		meta := ShardMeta{Job: "io", Step: 1, Rank: 0, World: 1, Lo: 1, Hi: n + 1, Total: n + 1, Config: []byte(testConfig)}
		st := subState(flat, 1, n+1) // unaligned source memory on purpose
		var files [2][]byte
		for i, store := range []*DirStore{newTestStore(t), newTestStore(t).WithBufferedIO()} {
			info, err := store.WriteShard(context.Background(), meta, st)
			if err != nil {
				t.Fatal(err)
			}
			files[i] = mustRead(t, store.StepDir("io", 1, 0)+"/"+info.File)
			if int64(len(files[i])) != info.Bytes {
				t.Fatalf("n=%d: file is %d bytes, info says %d", n, len(files[i]), info.Bytes)
			}
		}
		if !bytes.Equal(files[0], files[1]) {
			t.Fatalf("n=%d: direct and buffered writes differ", n)
		}
	}
}
