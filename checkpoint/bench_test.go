package checkpoint

import (
	"context"
	"flag"
	"testing"
)

var benchFloats = flag.Int("checkpoint.floats", 1<<22, "elements per tensor in the write benchmarks (64M = 768 MB files)")

func TestBenchWriteReportsConsistentFigures(t *testing.T) {
	res, err := BenchWrite(t.TempDir(), 1<<14)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes <= 12<<14 || len(res.DiskRuns) != benchRounds || len(res.DiskDirectRuns) != benchRounds || len(res.CheckpointRuns) != benchRounds {
		t.Fatalf("result %+v", res)
	}
	if res.DiskMBps <= 0 || res.DiskDirectMBps <= 0 || res.CheckpointMBps <= 0 || res.SnapshotStall <= 0 || res.AsyncWrite <= 0 {
		t.Fatalf("missing figures: %+v", res)
	}
	if d := res.Ratio - res.CheckpointMBps/res.DiskMBps; d > 1e-9 || d < -1e-9 {
		t.Errorf("ratio %v is not checkpoint/disk", res.Ratio)
	}
	if _, err := BenchWrite(t.TempDir(), 0); err == nil {
		t.Error("BenchWrite accepted zero floats")
	}
}

// BenchmarkBenchWrite runs BenchWrite once per iteration and reports its
// figures:
//
//	go test ./checkpoint/ -run '^$' -bench BenchWrite -benchtime 1x -checkpoint.floats 67108864
func BenchmarkBenchWrite(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		res, err := BenchWrite(dir, *benchFloats)
		if err != nil {
			b.Fatal(err)
		}
		b.Log("\n" + res.String())
		b.ReportMetric(res.DiskMBps, "disk-MB/s")
		b.ReportMetric(res.CheckpointMBps, "ckpt-MB/s")
		b.ReportMetric(res.DiskDirectMBps, "direct-MB/s")
		b.ReportMetric(res.Ratio, "ratio")
		b.ReportMetric(float64(res.SnapshotStall.Microseconds())/1e3, "stall-ms")
	}
}

func BenchmarkWriteShard(b *testing.B) {
	store := newTestStore(b)
	n := *benchFloats
	st := benchState(n)
	meta := ShardMeta{Job: "bench", Rank: 0, World: 1, Lo: 0, Hi: n, Total: n}
	b.SetBytes(12 * int64(n))
	for b.Loop() {
		if _, err := store.WriteShard(context.Background(), meta, st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshotStall measures how long Snapshot blocks training once
// its buffers exist (stall-ms); ns/op is the whole snapshot-and-write cycle.
func BenchmarkSnapshotStall(b *testing.B) {
	w := NewAsyncWriter(newTestStore(b))
	defer w.Close()
	n := *benchFloats
	st := benchState(n)
	meta := ShardMeta{Job: "bench", Rank: 0, World: 1, Lo: 0, Hi: n, Total: n}
	ctx := context.Background()
	warm, err := w.Snapshot(ctx, meta, st)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := warm.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var stall float64
	for i := 0; i < b.N; i++ {
		p, err := w.Snapshot(ctx, meta, st)
		if err != nil {
			b.Fatal(err)
		}
		stall += p.Stall().Seconds()
		if _, err := p.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(stall/float64(b.N)*1e3, "stall-ms")
}
