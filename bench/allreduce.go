package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/embedded"
	"github.com/nats-io/nats-server/v2/server"
)

// natsDefaultMaxPayload is nats-server's own default max_payload, which
// the benchmark keeps unless told otherwise.
const natsDefaultMaxPayload = 1 << 20

// tcpChunkFloats is the TCP reference ring's chunk: 1 MiB writes.
const tcpChunkFloats = 1 << 18

// AllReduceOptions sizes an all-reduce benchmark.
type AllReduceOptions struct {
	Workers int // ranks, at least 2
	Floats  int // float32s per rank's vector
	Reps    int // timed repetitions of each ring; the median is reported
	// ChunkBytes and Window tune the NATS ring (zero: defaults). The TCP
	// ring keeps its own 1 MiB chunks (tcpChunkFloats) whatever they are.
	ChunkBytes int
	Window     int
	// MaxPayload is the embedded server's max_payload; zero keeps the
	// NATS default of 1 MiB.
	MaxPayload int
	// Gather is the NATS ring's all-gather; zero means allreduce.DefaultGather.
	Gather allreduce.GatherMode
}

// AllReduceResult is what Bench measured. Bus bandwidth is 2(N-1)/N times the
// vector's bytes over the median time: the bytes each rank must send and
// receive in a ring all-reduce, so it is comparable across N.
type AllReduceResult struct {
	Workers       int     `json:"workers"`
	Floats        int     `json:"floats"`
	Reps          int     `json:"reps"`
	ChunkBytes    int     `json:"chunk_bytes"`
	PipelineDepth int     `json:"pipeline_depth"`
	Gather        string  `json:"gather"`
	MaxPayload    int     `json:"max_payload"`
	NATSSeconds   float64 `json:"nats_seconds"`
	TCPSeconds    float64 `json:"tcp_seconds"`
	NATSBusBW     float64 `json:"nats_busbw_mbs"`
	TCPBusBW      float64 `json:"tcp_busbw_mbs"`
	Ratio         float64 `json:"ratio"`
	// NATSAllocBytes is heap allocated per NATS all-reduce, all ranks
	// and the embedded server together.
	NATSAllocBytes uint64 `json:"nats_alloc_bytes_per_op"`
	// Identical says both rings produced the same bits on every rank.
	Identical bool `json:"identical"`
}

// AllReduce starts a nats-server on loopback (with password auth, as a real
// deployment has), runs the NATS ring and the direct-TCP reference ring
// on the same data, alternating repetitions so both see the same machine
// load, and reports median times and bus bandwidths.
func AllReduce(ctx context.Context, o AllReduceOptions) (AllReduceResult, error) {
	if o.Workers < 2 || o.Floats < 1 || o.Reps < 1 {
		return AllReduceResult{}, fmt.Errorf("bench: need at least 2 workers, 1 float and 1 repetition, got %d, %d, %d", o.Workers, o.Floats, o.Reps)
	}
	if o.Window <= 0 {
		o.Window = allreduce.DefaultWindow
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = allreduce.DefaultChunkBytes
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = natsDefaultMaxPayload
	}
	user, password := "bench", randomSecret()
	srv, err := embedded.StartNATS(embedded.NATSConfig{
		Users:      []*server.User{{Username: user, Password: password}},
		MaxPayload: int32(o.MaxPayload),
		// Everything the ring can have in flight, with room to spare, so
		// the server never cuts a subscriber off as a slow consumer.
		MaxPending: max(64<<20, int64(4*o.Workers*o.Window*allreduce.MessageBytes(o.ChunkBytes))),
	})
	if err != nil {
		return AllReduceResult{}, fmt.Errorf("bench: %w", err)
	}
	defer embedded.StopNATS(srv)

	natsRings, closeNATS, err := dialBenchRings(srv.ClientURL(), user, password, o)
	if err != nil {
		return AllReduceResult{}, err
	}
	defer closeNATS()
	chunk := natsRings[0].ChunkFloats()
	// The reference ring streams in chunks of its own best size, not the
	// NATS ring's: a TCP stream pays nothing per chunk but a write call.
	tcpRings, closeTCP, err := dialTCPRings(o.Workers, tcpChunkFloats)
	if err != nil {
		return AllReduceResult{}, fmt.Errorf("bench: %w", err)
	}
	defer closeTCP()

	inputs := make([][]float32, o.Workers)
	natsBufs := make([][]float32, o.Workers)
	tcpBufs := make([][]float32, o.Workers)
	for w := range inputs {
		rng := mrand.New(mrand.NewPCG(uint64(w), 0xbe7c4))
		inputs[w] = make([]float32, o.Floats)
		for i := range inputs[w] {
			inputs[w][i] = float32(rng.NormFloat64())
		}
		natsBufs[w] = make([]float32, o.Floats)
		tcpBufs[w] = make([]float32, o.Floats)
	}
	runNATS := func(step uint64) (time.Duration, error) {
		return timeRanks(inputs, natsBufs, func(w int) error { return natsRings[w].AllReduce(ctx, step, natsBufs[w]) })
	}
	runTCP := func() (time.Duration, error) {
		return timeRanks(inputs, tcpBufs, func(w int) error { return tcpRings[w].allReduce(tcpBufs[w]) })
	}
	// One untimed round each: the NATS ring's first collective waits for
	// every rank to hear from its peers, and both warm their buffers.
	if _, err := runNATS(0); err != nil {
		return AllReduceResult{}, fmt.Errorf("bench: warm-up: %w", err)
	}
	if _, err := runTCP(); err != nil {
		return AllReduceResult{}, fmt.Errorf("bench: warm-up: %w", err)
	}

	var natsTimes, tcpTimes []float64
	var allocs uint64
	var ms runtime.MemStats
	for rep := range o.Reps {
		if err := ctx.Err(); err != nil {
			return AllReduceResult{}, err
		}
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		d, err := runNATS(uint64(rep + 1))
		if err != nil {
			return AllReduceResult{}, fmt.Errorf("bench: NATS repetition %d: %w", rep, err)
		}
		runtime.ReadMemStats(&ms)
		allocs += ms.TotalAlloc - before
		natsTimes = append(natsTimes, d.Seconds())
		if d, err = runTCP(); err != nil {
			return AllReduceResult{}, fmt.Errorf("bench: TCP repetition %d: %w", rep, err)
		}
		tcpTimes = append(tcpTimes, d.Seconds())
	}

	res := AllReduceResult{
		Workers: o.Workers, Floats: o.Floats, Reps: o.Reps,
		ChunkBytes: 4 * chunk, PipelineDepth: o.Window,
		Gather:         natsRings[0].Gather().String(),
		MaxPayload:     natsRings[0].MaxMessage(),
		NATSSeconds:    Median(natsTimes),
		TCPSeconds:     Median(tcpTimes),
		NATSAllocBytes: allocs / uint64(o.Reps),
		Identical:      true,
	}
	busBytes := 2 * float64(o.Workers-1) / float64(o.Workers) * 4 * float64(o.Floats)
	res.NATSBusBW = busBytes / res.NATSSeconds / 1e6
	res.TCPBusBW = busBytes / res.TCPSeconds / 1e6
	res.Ratio = res.NATSBusBW / res.TCPBusBW
	for w := range natsBufs {
		for i := range natsBufs[w] {
			if math.Float32bits(natsBufs[w][i]) != math.Float32bits(tcpBufs[w][i]) {
				res.Identical = false
				break
			}
		}
	}
	return res, nil
}

func dialBenchRings(url, user, password string, o AllReduceOptions) ([]*allreduce.Ring, func(), error) {
	var rings []*allreduce.Ring
	var transports []*allreduce.NATSTransport
	closeAll := func() {
		for _, r := range rings {
			r.Close()
		}
		for _, t := range transports {
			t.Close()
		}
	}
	for w := range o.Workers {
		t, err := allreduce.DialNATS(allreduce.NATSOptions{URL: url, Name: fmt.Sprintf("bench-%d", w), User: user, Password: password})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("bench: %w", err)
		}
		transports = append(transports, t)
		r, err := allreduce.NewRing(t, allreduce.Config{Job: "bench", Generation: 1, Rank: w, World: o.Workers,
			Deadline: 2 * time.Minute, ChunkBytes: o.ChunkBytes, Window: o.Window, Gather: o.Gather})
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("bench: %w", err)
		}
		rings = append(rings, r)
	}
	return rings, closeAll, nil
}

// timeRanks resets every rank's buffer to its input, then times fn run on
// all ranks at once.
func timeRanks(inputs, bufs [][]float32, fn func(rank int) error) (time.Duration, error) {
	for w := range bufs {
		copy(bufs[w], inputs[w])
	}
	errs := make([]error, len(bufs))
	var wg sync.WaitGroup
	start := time.Now()
	for w := range bufs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = fn(w)
		}()
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

func randomSecret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
