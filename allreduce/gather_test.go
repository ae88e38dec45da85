package allreduce

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// inFlight watches the fan-out all-gather's traffic on a shared
// MemTransport: broadcasts published by each rank, and those handed to
// each rank's listener, so it can tell how many are in flight between
// any two ranks.
type inFlight struct {
	mu        sync.Mutex
	published []int
	delivered [][]int // delivered[to][from]
	worst     int
}

// rankView is one rank's Transport, which counts for inFlight; slow
// makes that rank's broadcast listener take its time.
type rankView struct {
	Transport
	f    *inFlight
	rank int
	slow time.Duration
}

func isGatherData(msg []byte) bool { return len(msg) >= headerSize && phase(msg[3]) == phaseGather }

func (v *rankView) Send(subject string, msg []byte) error {
	if isGatherData(msg) {
		f := v.f
		f.mu.Lock()
		f.published[v.rank]++
		for to := range f.delivered {
			if to != v.rank {
				f.worst = max(f.worst, f.published[v.rank]-f.delivered[to][v.rank])
			}
		}
		f.mu.Unlock()
	}
	return v.Transport.Send(subject, msg)
}

func (v *rankView) Listen(subject string, handle func([]byte)) (func() error, error) {
	return v.Transport.Listen(subject, func(msg []byte) {
		if isGatherData(msg) {
			if from, _ := senderOf(msg); from != v.rank {
				v.f.mu.Lock()
				v.f.delivered[v.rank][from]++
				v.f.mu.Unlock()
				time.Sleep(v.slow)
			}
		}
		handle(msg)
	})
}

// TestFanoutWindowBoundsInFlight: with one rank slow to take its
// messages, no rank gets more than 2·Window broadcasts ahead of any
// receiver (the bound docs/allreduce.md derives), and the result is
// still exact.
func TestFanoutWindowBoundsInFlight(t *testing.T) {
	checkGoroutines(t)
	const world, chunk, window, slow = 4, 16, 3, 2
	const n = world * chunk * 40 // 40 chunks per segment
	mt := NewMemTransport(headerSize + 4*chunk)
	f := &inFlight{published: make([]int, world), delivered: make([][]int, world)}
	rings := make([]*Ring, world)
	for r := range rings {
		f.delivered[r] = make([]int, world)
		v := &rankView{Transport: mt, f: f, rank: r}
		if r == slow {
			v.slow = 200 * time.Microsecond
		}
		ring, err := NewRing(v, Config{Job: "window", Generation: 1, Rank: r, World: world, Window: window, Deadline: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ring.Close() })
		rings[r] = ring
	}
	xs := randomVectors(rand.New(rand.NewPCG(8, 8)), world, n)
	want := ringOrderSum(xs)
	bufs := cloneAll(xs)
	errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 1, bufs[r]) })
	requireSums(t, "window bound", errs, bufs, want)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.published[0] != 40 {
		t.Fatalf("rank 0 published %d chunks, want 40", f.published[0])
	}
	if f.worst > 2*window {
		t.Errorf("a rank got %d broadcasts ahead of a receiver, window %d allows %d", f.worst, window, 2*window)
	}
	if f.worst <= window {
		t.Logf("at most %d broadcasts in flight: the slow rank did not hold anyone back", f.worst)
	}
}
