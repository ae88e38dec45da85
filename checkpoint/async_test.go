package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

func TestSnapshotCopiesStateAndReusesBuffers(t *testing.T) {
	store := newTestStore(t)
	w := NewAsyncWriter(store)
	defer w.Close()
	ctx := context.Background()
	const n = 2 * parallelCopySplit // large enough for the parallel copy
	st := flatState(n)
	orig := flatState(n)
	scribble := make([]float32, n)
	if err := w.Reserve(ctx, n); err != nil {
		t.Fatal(err)
	}
	first := &w.buf.Params[0]
	for step := int64(1); step <= 3; step++ {
		meta := ShardMeta{Job: "async", Step: step, Rank: 0, World: 1, Lo: 0, Hi: n, Total: n}
		p, err := w.Snapshot(ctx, meta, st)
		if err != nil {
			t.Fatal(err)
		}
		// Training goes on: the live state changes while the write runs.
		copy(st.Params, scribble)
		info, err := p.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, got, err := ReadShard(ctx, store.StepDir("async", step, 0)+"/"+info.File)
		if err != nil {
			t.Fatal(err)
		}
		if !sameBits(got.Params, orig.Params) || !sameBits(got.AdamV, orig.AdamV) {
			t.Fatalf("step %d: the file holds the state after Snapshot returned, not at the snapshot", step)
		}
		if p.Stall() <= 0 || p.WriteDuration() <= 0 {
			t.Errorf("timings not recorded: stall %v write %v", p.Stall(), p.WriteDuration())
		}
		copy(st.Params, orig.Params)
		if &w.buf.Params[0] != first {
			t.Errorf("step %d allocated new snapshot buffers", step)
		}
	}
}

func TestSnapshotWaitsForWriteInFlight(t *testing.T) {
	store := newTestStore(t)
	w := NewAsyncWriter(store)
	release := make(chan struct{})
	w.beforeWrite = func() { <-release }
	ctx := context.Background()
	st := flatState(8)
	meta := ShardMeta{Job: "busy", Step: 1, Rank: 0, World: 1, Lo: 0, Hi: 8, Total: 8}
	p1, err := w.Snapshot(ctx, meta, st)
	if err != nil {
		t.Fatal(err)
	}

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	meta.Step = 2
	if _, err := w.Snapshot(short, meta, st); !errors.Is(err, ErrWriteInFlight) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Snapshot while busy = %v, want ErrWriteInFlight", err)
	}

	closed := make(chan struct{})
	go func() {
		w.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a write was in flight")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-closed
	if _, err := p1.Wait(ctx); err != nil {
		t.Fatalf("write in flight at Close: %v", err)
	}
	if _, err := w.Snapshot(ctx, meta, st); !errors.Is(err, ErrClosed) {
		t.Fatalf("Snapshot after Close = %v, want ErrClosed", err)
	}
}

func TestSnapshotCancelledWriteLeavesNoShard(t *testing.T) {
	store := newTestStore(t)
	w := NewAsyncWriter(store)
	defer w.Close()
	release := make(chan struct{})
	w.beforeWrite = func() { <-release }
	ctx, cancel := context.WithCancel(context.Background())
	meta := ShardMeta{Job: "abort", Step: 1, Rank: 0, World: 1, Lo: 0, Hi: 8, Total: 8}
	p, err := w.Snapshot(ctx, meta, flatState(8))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	close(release)
	if _, err := p.Wait(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled checkpoint = %v", err)
	}
	if _, err := os.Stat(store.StepDir("abort", 1, 0) + "/" + ShardFileName(0, 1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a cancelled checkpoint left its shard: %v", err)
	}
}

// TestConcurrentUse exercises the store and writers from many goroutines;
// run it with -race.
func TestConcurrentUse(t *testing.T) {
	store := newTestStore(t)
	ctx := context.Background()
	const total, world = 4000, 4
	flat := flatState(total)
	ranges := evenRanges(total, world)

	// Each worker has its own AsyncWriter and checkpoints twice; a second
	// goroutine per worker races it for the writer.
	infos := make([][]ShardInfo, 2)
	for i := range infos {
		infos[i] = make([]ShardInfo, world)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*world)
	for r := range world {
		w := NewAsyncWriter(store)
		for s := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				meta := ShardMeta{Job: "conc", Step: int64(s + 1), Rank: r, World: world, Lo: ranges[r][0], Hi: ranges[r][1], Total: total}
				p, err := w.Snapshot(ctx, meta, subState(flat, ranges[r][0], ranges[r][1]))
				if err != nil {
					errs <- err
					return
				}
				info, err := p.Wait(ctx)
				if err != nil {
					errs <- err
					return
				}
				infos[s][r] = info
			}()
		}
		defer w.Close()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var manifests []*Manifest
	for s := range 2 {
		m, err := NewManifest("conc", int64(s+1), 0, total, nil, infos[s])
		if err != nil {
			t.Fatal(err)
		}
		manifests = append(manifests, m)
	}
	errs = make(chan error, 16)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := manifests[i%2]
			if err := store.Verify(ctx, m); err != nil {
				errs <- err
				return
			}
			dst := make([]float32, 1500)
			if err := store.LoadRange(ctx, m, 1000, 2500, State{AdamM: dst}, LoadOptions{}); err != nil {
				errs <- err
				return
			}
			if !sameBits(dst, flat.AdamM[1000:2500]) {
				errs <- fmt.Errorf("goroutine %d loaded wrong values", i)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
