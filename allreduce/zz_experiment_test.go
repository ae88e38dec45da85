package allreduce

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestZZExperiment(t *testing.T) {
	if os.Getenv("ZZ") == "" {
		t.Skip()
	}
	const world, floats, reps = 4, 16 << 20, 4
	s, _ := startNATSServer(server.Options{Username: "b", Password: "p", MaxPending: 256 << 20})
	defer stopNATSServer(s)
	rng := rand.New(rand.NewPCG(1, 2))
	xs := make([][]float32, world)
	for r := range xs {
		xs[r] = make([]float32, floats)
		for i := range xs[r] {
			xs[r][i] = rng.Float32()
		}
	}
	bufs := cloneAll(xs)
	bus := float64(2*(world-1)*4*floats/world) / 1e6
	measure := func(name string, fn func(w int, step uint64) error) {
		timeRanks(xs, bufs, func(w int) error { return fn(w, 0) })
		var wall, cpu time.Duration
		for i := range reps {
			c0 := cpuNow()
			d, err := timeRanks(xs, bufs, func(w int) error { return fn(w, uint64(i+1)) })
			if err != nil {
				t.Fatal(err)
			}
			cpu += cpuNow() - c0
			wall += d
		}
		fmt.Printf("%-28s wall %6.0f MB/s   cpu-time %6.0f MB/cpu-s\n", name, bus*reps/wall.Seconds(), bus*reps/cpu.Seconds())
	}
	tr, closeT, _ := dialTCPRings(world, tcpChunkFloats)
	measure("tcp", func(w int, _ uint64) error { return tr[w].allReduce(bufs[w]) })
	closeT()
	for _, c := range [][2]int{{8 << 10, 64}, {16 << 10, 32}, {60 << 10, 8}, {256 << 10, 4}, {1 << 20, 1}, {1 << 20, 2}, {1 << 20, 4}, {1 << 20, 8}} {
		rings, closeAll, err := dialBenchRings(s.ClientURL(), "b", "p", BenchOptions{Workers: world, ChunkBytes: c[0], Window: c[1]})
		if err != nil {
			t.Fatal(err)
		}
		measure(fmt.Sprintf("nats chunk %d window %d", c[0], c[1]), func(w int, step uint64) error { return rings[w].AllReduce(context.Background(), step, bufs[w]) })
		closeAll()
	}
	tr, closeT, _ = dialTCPRings(world, tcpChunkFloats)
	measure("tcp", func(w int, _ uint64) error { return tr[w].allReduce(bufs[w]) })
	closeT()
}
