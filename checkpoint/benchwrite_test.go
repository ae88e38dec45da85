package checkpoint

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// BenchResult compares checkpoint writing with the disk's raw sequential
// write bandwidth, measured in the same run on the same directory.
type BenchResult struct {
	Floats int   // elements per tensor (the shard range length)
	Bytes  int64 // bytes per file, equal for both kinds of write
	Rounds int
	// DiskMBps is the median bandwidth (1 MB = 1e6 bytes) of writing a file
	// of Bytes with large writes from memory, then fsync: what the disk
	// gives a trivial writer.
	DiskMBps float64
	// DiskDirectMBps is the same file written as checkpoints are (direct
	// I/O through the write pipeline, flushing as it goes) but without
	// checksums, header patch or rename: the bandwidth the checkpoint's
	// I/O strategy gets from this disk. Equal to DiskMBps's method where
	// direct I/O is unavailable.
	DiskDirectMBps float64
	// CheckpointMBps is the median bandwidth of WriteShard: header, data,
	// sha256, fsync, rename and directory fsync.
	CheckpointMBps float64
	// Ratio is CheckpointMBps / DiskMBps.
	Ratio float64
	// DirectRatio is CheckpointMBps / DiskDirectMBps: the cost of
	// checksums and atomicity alone.
	DirectRatio float64
	// DiskRuns, DiskDirectRuns and CheckpointRuns are every measurement.
	DiskRuns, DiskDirectRuns, CheckpointRuns []time.Duration
	// SnapshotStallFirst is AsyncWriter.Snapshot's stall on first use, when
	// its buffers are allocated and faulted in.
	SnapshotStallFirst time.Duration
	// SnapshotStall is the stall once the buffers are reused: the cost a
	// training step sees per checkpoint.
	SnapshotStall time.Duration
	// AsyncWrite is the background write time of that snapshot.
	AsyncWrite time.Duration
}

func (r BenchResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d floats x 3 tensors = %d bytes, %d rounds\n", r.Floats, r.Bytes, r.Rounds)
	fmt.Fprintf(&b, "disk sequential write: %.0f MB/s (runs %v)\n", r.DiskMBps, r.DiskRuns)
	fmt.Fprintf(&b, "disk direct write:     %.0f MB/s (runs %v)\n", r.DiskDirectMBps, r.DiskDirectRuns)
	fmt.Fprintf(&b, "checkpoint write:      %.0f MB/s (runs %v)\n", r.CheckpointMBps, r.CheckpointRuns)
	fmt.Fprintf(&b, "ratio: %.2f of disk sequential, %.2f of disk direct\n", r.Ratio, r.DirectRatio)
	fmt.Fprintf(&b, "snapshot stall: %v first, %v reused buffers; background write %v", r.SnapshotStallFirst, r.SnapshotStall, r.AsyncWrite)
	return b.String()
}

// rawWriteChunk is the size of each write of the raw baseline.
const rawWriteChunk = 8 << 20

// benchRounds alternates raw and checkpoint writes this many times; the
// medians damp the noise of a shared disk.
const benchRounds = 5

// BenchWrite measures, in dir, the raw sequential write bandwidth and the
// checkpoint write bandwidth for a shard of floats elements per tensor
// (three tensors, 12*floats bytes of data), and the snapshot stall of an
// AsyncWriter for the same range. It needs about 24*floats bytes of memory
// and 12*floats bytes of free disk, and removes its files.
func BenchWrite(dir string, floats int) (BenchResult, error) {
	if floats < 1 {
		return BenchResult{}, fmt.Errorf("bench: floats must be positive, got %d", floats)
	}
	ctx := context.Background()
	tmp, err := os.MkdirTemp(dir, "checkpoint-bench-*")
	if err != nil {
		return BenchResult{}, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(tmp)
	store, err := NewDirStore(tmp)
	if err != nil {
		return BenchResult{}, fmt.Errorf("bench: %w", err)
	}
	st := benchState(floats)
	meta := ShardMeta{Job: "bench", Rank: 0, World: 1, Lo: 0, Hi: floats, Total: floats}
	header, err := encodeHeader(meta, strings.Repeat("0", 64))
	if err != nil {
		return BenchResult{}, fmt.Errorf("bench: %w", err)
	}

	res := BenchResult{Floats: floats, Bytes: int64(len(header)) + 12*int64(floats), Rounds: benchRounds}
	for round := 0; round < benchRounds; round++ {
		meta.Step = int64(round)
		raw := func() error {
			d, err := rawWrite(filepath.Join(tmp, "raw"), header, st)
			res.DiskRuns = append(res.DiskRuns, d)
			return err
		}
		ckpt := func() error {
			t := time.Now()
			info, err := store.WriteShard(ctx, meta, st)
			res.CheckpointRuns = append(res.CheckpointRuns, time.Since(t))
			if err == nil && info.Bytes != res.Bytes {
				err = fmt.Errorf("checkpoint is %d bytes, raw file %d", info.Bytes, res.Bytes)
			}
			os.RemoveAll(store.StepDir(meta.Job, meta.Step, meta.Generation))
			return err
		}
		rawDirect := func() error {
			d, err := rawDirectWrite(filepath.Join(tmp, "raw-direct"), header, st, store.bufs)
			res.DiskDirectRuns = append(res.DiskDirectRuns, d)
			return err
		}
		// Rotate the order so that no kind always follows another's
		// dirty pages.
		kinds := []func() error{raw, rawDirect, ckpt}
		for i := range kinds {
			if err := kinds[(i+round)%len(kinds)](); err != nil {
				return res, fmt.Errorf("bench round %d: %w", round, err)
			}
		}
	}
	res.DiskMBps = float64(res.Bytes) / 1e6 / median(res.DiskRuns).Seconds()
	res.CheckpointMBps = float64(res.Bytes) / 1e6 / median(res.CheckpointRuns).Seconds()
	res.DiskDirectMBps = float64(res.Bytes) / 1e6 / median(res.DiskDirectRuns).Seconds()
	res.Ratio = res.CheckpointMBps / res.DiskMBps
	res.DirectRatio = res.CheckpointMBps / res.DiskDirectMBps

	w := NewAsyncWriter(store)
	defer w.Close()
	for i := 0; i < 2; i++ {
		meta.Step = int64(benchRounds + i)
		p, err := w.Snapshot(ctx, meta, st)
		if err != nil {
			return res, fmt.Errorf("bench snapshot: %w", err)
		}
		if _, err := p.Wait(ctx); err != nil {
			return res, fmt.Errorf("bench snapshot: %w", err)
		}
		if i == 0 {
			res.SnapshotStallFirst = p.Stall()
		} else {
			res.SnapshotStall, res.AsyncWrite = p.Stall(), p.WriteDuration()
		}
		os.RemoveAll(store.StepDir(meta.Job, meta.Step, meta.Generation))
	}
	return res, nil
}

// rawWrite writes header and the state's bytes to path the simplest fast
// way (large writes, one fsync) and returns the time including create,
// fsync and close. It is the baseline a checkpoint write is compared with.
func rawWrite(path string, header []byte, st State) (time.Duration, error) {
	t := time.Now()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	if _, err := f.Write(header); err != nil {
		f.Close()
		return 0, err
	}
	for _, tensor := range st.tensors() {
		b := floatBytes(tensor)
		for off := 0; off < len(b); off += rawWriteChunk {
			if _, err := f.Write(b[off:min(off+rawWriteChunk, len(b))]); err != nil {
				f.Close()
				return 0, err
			}
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return time.Since(t), nil
}

// rawDirectWrite writes header and the state's bytes to path the way
// checkpoints are written, minus checksums, header patch and rename.
func rawDirectWrite(path string, header []byte, st State, pool *bufferPool) (time.Duration, error) {
	t := time.Now()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	direct := setDirectIO(f, true) == nil
	pw := newPipeWriter(f, f.Sync, flushEvery, pool)
	_, err = pw.Write(header)
	for _, tensor := range st.tensors() {
		if err == nil {
			_, err = pw.Write(floatBytes(tensor))
		}
	}
	if closeErr := pw.close(direct); err == nil {
		err = closeErr
	}
	if err != nil {
		return 0, err
	}
	if direct {
		if err := f.Truncate(int64(len(header)) + 12*int64(len(st.Params))); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return time.Since(t), f.Close()
}

// benchState fills a state with pseudo-random values: incompressible, so
// storage that compresses or deduplicates cannot flatter either side.
func benchState(n int) State {
	st := State{Params: make([]float32, n), AdamM: make([]float32, n), AdamV: make([]float32, n)}
	x := uint32(2463534242)
	for _, t := range st.tensors() {
		for i := range t {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			t[i] = float32(x) / (1 << 32)
		}
	}
	return st
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
