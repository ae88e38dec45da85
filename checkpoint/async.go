package checkpoint

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// AsyncWriter takes checkpoints without stalling training for the disk:
// Snapshot copies the worker's state into buffers the writer owns and
// returns, and a goroutine writes the copy. The buffers are reused, so
// after the first checkpoint of a given size no memory is allocated for
// state. One checkpoint is written at a time.
type AsyncWriter struct {
	store *DirStore
	// slot holds one token while a checkpoint is being copied or written;
	// it orders the buffer copy of one checkpoint after the write of the
	// previous one.
	slot chan struct{}

	mu     sync.Mutex
	closed bool

	buf State // owned by whoever holds slot

	// beforeWrite, if set, runs in the background goroutine before the
	// write; tests use it to hold a write in flight.
	beforeWrite func()
}

// NewAsyncWriter returns a writer that writes to store.
func NewAsyncWriter(store *DirStore) *AsyncWriter {
	return &AsyncWriter{store: store, slot: make(chan struct{}, 1)}
}

// Pending is a checkpoint being written in the background.
type Pending struct {
	done  chan struct{}
	stall time.Duration

	// Set before done is closed.
	info  ShardInfo
	err   error
	write time.Duration
}

// Done is closed when the write has finished, successfully or not.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait blocks until the write has finished or ctx ends, and returns the
// shard report for the coordinator.
func (p *Pending) Wait(ctx context.Context) (ShardInfo, error) {
	select {
	case <-p.done:
		return p.info, p.err
	case <-ctx.Done():
		return ShardInfo{}, ctx.Err()
	}
}

// Stall is how long Snapshot blocked the caller copying the state.
func (p *Pending) Stall() time.Duration { return p.stall }

// WriteDuration is how long the background write took; it waits for Done.
func (p *Pending) WriteDuration() time.Duration {
	<-p.done
	return p.write
}

// Snapshot copies st and starts writing it as the shard described by meta.
// If the previous checkpoint is still being written, Snapshot waits for it;
// if ctx ends first it returns an error wrapping ErrWriteInFlight and
// changes nothing. ctx also governs the background write: cancelling it
// abandons the checkpoint (no file is left under the shard's name).
// st may be changed as soon as Snapshot returns.
func (w *AsyncWriter) Snapshot(ctx context.Context, meta ShardMeta, st State) (*Pending, error) {
	if err := meta.Validate(); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if err := st.checkLen(meta.Len()); err != nil {
		return nil, fmt.Errorf("snapshot shard %d of step %d: %w", meta.Rank, meta.Step, err)
	}
	select {
	case w.slot <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("snapshot shard %d of step %d: %w (%w)", meta.Rank, meta.Step, ErrWriteInFlight, ctx.Err())
	}
	w.mu.Lock()
	closed := w.closed
	w.mu.Unlock()
	if closed {
		<-w.slot
		return nil, fmt.Errorf("snapshot shard %d of step %d: %w", meta.Rank, meta.Step, ErrClosed)
	}

	start := time.Now()
	n := meta.Len()
	w.buf = State{Params: reuse(w.buf.Params, n), AdamM: reuse(w.buf.AdamM, n), AdamV: reuse(w.buf.AdamV, n)}
	parallelCopy(w.buf.Params, st.Params)
	parallelCopy(w.buf.AdamM, st.AdamM)
	parallelCopy(w.buf.AdamV, st.AdamV)
	p := &Pending{done: make(chan struct{}), stall: time.Since(start)}

	go func(buf State) {
		defer func() { <-w.slot }()
		if w.beforeWrite != nil {
			w.beforeWrite()
		}
		t := time.Now()
		p.info, p.err = w.store.WriteShard(ctx, meta, buf)
		p.write = time.Since(t)
		close(p.done)
	}(w.buf)
	return p, nil
}

// Reserve allocates the snapshot buffers for shards of n elements and
// touches every page, so that the first Snapshot does not stall training
// for the allocation and page faults (seconds for hundreds of MB). It waits
// for a write in flight, as Snapshot does.
func (w *AsyncWriter) Reserve(ctx context.Context, n int) error {
	select {
	case w.slot <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("reserve snapshot buffers: %w (%w)", ErrWriteInFlight, ctx.Err())
	}
	defer func() { <-w.slot }()
	for _, b := range []*[]float32{&w.buf.Params, &w.buf.AdamM, &w.buf.AdamV} {
		*b = reuse(*b, n)
		clear(*b) // fresh memory is mapped lazily; writing faults it in now
	}
	return nil
}

// Close waits for the checkpoint in flight, if any, and makes later
// Snapshots fail with ErrClosed. The in-flight result is reported through
// its Pending.
func (w *AsyncWriter) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.slot <- struct{}{}
	<-w.slot
	return nil
}

// reuse returns buf resized to n, reallocating only when it is too small.
func reuse(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

// parallelCopySplit is the size above which a copy is split across cores:
// while the snapshot runs, training is stopped, so the cores are free.
const parallelCopySplit = 1 << 18

// parallelCopy copies src to dst (same length) using all cores for large
// slices; memcpy of one core does not saturate memory bandwidth.
func parallelCopy(dst, src []float32) {
	workers := min(runtime.GOMAXPROCS(0), 8, len(src)/parallelCopySplit)
	if workers <= 1 {
		copy(dst, src)
		return
	}
	var wg sync.WaitGroup
	part := (len(src) + workers - 1) / workers
	for lo := 0; lo < len(src); lo += part {
		hi := min(lo+part, len(src))
		wg.Add(1)
		go func() {
			defer wg.Done()
			copy(dst[lo:hi], src[lo:hi])
		}()
	}
	wg.Wait()
}
