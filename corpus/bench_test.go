package corpus

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// procStatusKiB reads fields of /proc/self/status in KiB; missing fields
// (another OS) read as 0.
func procStatusKiB(fields ...string) map[string]float64 {
	out := map[string]float64{}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		for _, f := range fields {
			rest, ok := bytes.CutPrefix(sc.Bytes(), []byte(f+":"))
			if !ok {
				continue
			}
			v, _ := strconv.ParseFloat(string(bytes.Fields(rest)[0]), 64)
			out[f] = v
		}
	}
	return out
}

// dropCache evicts a written, synced file from the page cache, so the
// benchmark starts cold, as a corpus larger than memory would be, instead
// of mapping pages the writer left cached.
func dropCache(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Logf("fadvise %s: %v (page cache not dropped)", path, err)
	}
}

// BenchmarkBatchBeyondMemory writes shards totalling five times the Go
// memory limit and draws batches over all of them. The heap stays small
// because tokens are read in place from the mappings; RSS grows only by
// the file pages batches touch (the cache is dropped after writing), which
// are clean page cache the kernel can reclaim. The kernel maps up to 64
// KiB of cached pages around each fault, so without release=true RSS soon
// covers most of the shards; release=true calls Corpus.Release every 8
// steps, which keeps RSS near the last few batches' pages. Run:
//
//	go test -run '^$' -bench BatchBeyondMemory -benchtime 1000x ./corpus/
func BenchmarkBatchBeyondMemory(b *testing.B) {
	b.Run("release=false", func(b *testing.B) { benchBeyondMemory(b, false) })
	b.Run("release=true", func(b *testing.B) { benchBeyondMemory(b, true) })
}

// benchBeyondMemory optionally calls Corpus.Release every 8 steps.
func benchBeyondMemory(b *testing.B, release bool) {
	if testing.Short() {
		b.Skip("writes 320 MiB of shards")
	}
	const (
		limit       = 64 << 20
		shards      = 5
		shardTokens = 32 << 20 // 64 MiB each: 320 MiB in all
		B, T        = 64, 1024
	)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(limit))
	dir := b.TempDir()
	var o Options
	chunk := make([]int, 1<<20)
	for k := 0; k < shards; k++ {
		p := filepath.Join(dir, fmt.Sprintf("train_%06d.bin", k))
		w, err := Create(p)
		if err != nil {
			b.Fatal(err)
		}
		for done := 0; done < shardTokens; done += len(chunk) {
			for j := range chunk {
				chunk[j] = (k*shardTokens + done + j) % 50257
			}
			if err := w.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		dropCache(b, p)
		o.Train = append(o.Train, p)
	}
	o.Val = o.Train[:1]
	c, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.CheckSeqLen(T); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	// Writing 5 to clear_refs resets VmHWM, so the peak is the loop's.
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	tokens, targets := make([]int32, B*T), make([]int32, B*T)
	hits := make([]int, shards)
	var ms runtime.MemStats
	var heapPeak uint64
	step := int64(0)
	b.SetBytes(B * T * 2)
	b.ResetTimer()
	for b.Loop() {
		c.Batch(1, step, 0, B, T, tokens, targets)
		// Tokens encode their own position (mod the vocab), so the
		// first one says which shard the window came from.
		if release && step%8 == 0 {
			if err := c.Release(); err != nil {
				b.Fatal(err)
			}
		}
		if step%64 == 0 {
			runtime.ReadMemStats(&ms)
			heapPeak = max(heapPeak, ms.HeapInuse)
			for i := 0; i < B; i++ {
				off := TrainOffset(1, step, i, uint64(c.TrainLen()-T-1))
				if int(tokens[i*T]) != off%50257 {
					b.Fatalf("window at %d starts with %d", off, tokens[i*T])
				}
				hits[off/shardTokens]++
			}
		}
		step++
	}
	b.StopTimer()
	for k, h := range hits {
		if h == 0 && step >= 64*shards*4 {
			b.Errorf("no sampled window fell in shard %d of %d", k, shards)
		}
	}
	st := procStatusKiB("VmHWM", "RssAnon", "RssFile")
	const mib = 1 << 20
	b.ReportMetric(float64(shards*shardTokens*2)/mib, "shards_MiB")
	b.ReportMetric(float64(limit)/mib, "memlimit_MiB")
	b.ReportMetric(st["VmHWM"]/1024, "maxRSS_MiB")
	b.ReportMetric(st["RssAnon"]/1024, "rssAnon_MiB")
	b.ReportMetric(st["RssFile"]/1024, "rssFile_MiB")
	b.ReportMetric(float64(heapPeak)/mib, "heapPeak_MiB")
}
