package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/embedded"
	"github.com/nats-io/nats-server/v2/server"
)

// TestBenchSmall runs Bench end to end on a small vector: both rings must
// agree bit for bit and every figure must be a positive measurement.
func TestBenchSmall(t *testing.T) {
	res, err := AllReduce(context.Background(), AllReduceOptions{Workers: 3, Floats: 50000, Reps: 3, ChunkBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Identical {
		t.Error("NATS and TCP rings disagree")
	}
	if res.NATSBusBW <= 0 || res.TCPBusBW <= 0 || res.Ratio <= 0 || res.NATSSeconds <= 0 || res.TCPSeconds <= 0 {
		t.Errorf("non-positive measurement: %+v", res)
	}
	if res.ChunkBytes != 16<<10 || res.PipelineDepth != allreduce.DefaultWindow || res.MaxPayload <= res.ChunkBytes || res.Gather != "fanout" {
		t.Errorf("reported configuration %+v", res)
	}
	if _, err := AllReduce(context.Background(), AllReduceOptions{Workers: 1, Floats: 10, Reps: 1}); err == nil {
		t.Error("Bench with one worker succeeded")
	}
}

// benchFloats is the vector size of the go test -bench benchmarks: 16 MiB
// per rank, big enough to be bandwidth-bound.
const benchFloats = 4 << 20

func BenchmarkAllReduce(b *testing.B) {
	for _, world := range []int{2, 4} {
		b.Run(fmt.Sprintf("nats/workers=%d", world), func(b *testing.B) {
			s, err := embedded.StartNATS(embedded.NATSConfig{Users: []*server.User{{Username: "b", Password: "p"}}, MaxPayload: natsDefaultMaxPayload})
			if err != nil {
				b.Fatal(err)
			}
			defer embedded.StopNATS(s)
			rings, closeAll, err := dialBenchRings(s.ClientURL(), "b", "p", AllReduceOptions{Workers: world})
			if err != nil {
				b.Fatal(err)
			}
			defer closeAll()
			benchRanks(b, world, func(w int, step uint64, buf []float32) error {
				return rings[w].AllReduce(context.Background(), step, buf)
			})
		})
		b.Run(fmt.Sprintf("tcp/workers=%d", world), func(b *testing.B) {
			rings, closeAll, err := dialTCPRings(world, tcpChunkFloats)
			if err != nil {
				b.Fatal(err)
			}
			defer closeAll()
			benchRanks(b, world, func(w int, _ uint64, buf []float32) error { return rings[w].allReduce(buf) })
		})
		b.Run(fmt.Sprintf("mem/workers=%d", world), func(b *testing.B) {
			mt := allreduce.NewMemTransport(allreduce.MessageBytes(allreduce.DefaultChunkBytes))
			rings := make([]*allreduce.Ring, world)
			for r := range rings {
				var err error
				if rings[r], err = allreduce.NewRing(mt, allreduce.Config{Job: "b", Rank: r, World: world, Deadline: time.Minute}); err != nil {
					b.Fatal(err)
				}
				defer rings[r].Close()
			}
			benchRanks(b, world, func(w int, step uint64, buf []float32) error {
				return rings[w].AllReduce(context.Background(), step, buf)
			})
		})
	}
}

// benchRanks times all-reduces of benchFloats on world ranks at once.
// SetBytes counts the bus bytes, so MB/s is bus bandwidth.
func benchRanks(b *testing.B, world int, allReduce func(rank int, step uint64, buf []float32) error) {
	rng := rand.New(rand.NewPCG(1, 2))
	xs := make([][]float32, world)
	for r := range xs {
		xs[r] = make([]float32, benchFloats)
		for i := range xs[r] {
			xs[r][i] = rng.Float32()
		}
	}
	bufs := cloneAll(xs)
	b.SetBytes(int64(2 * (world - 1) * 4 * benchFloats / world))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := timeRanks(xs, bufs, func(w int) error { return allReduce(w, uint64(i), bufs[w]) }); err != nil {
			b.Fatal(err)
		}
	}
}
