package allreduce

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// TestDeadRankFailsEveryRankWithinDeadline kills one rank's sends in the
// middle of a collective. Every rank, the dead one included, must return
// within the deadline, and every live rank must name the dead one.
func TestDeadRankFailsEveryRankWithinDeadline(t *testing.T) {
	checkGoroutines(t)
	for _, tt := range []struct {
		name     string
		gather   GatherMode
		inGather bool // die in the all-gather rather than the reduce-scatter
		sends    int64
	}{
		{"fan-out, dies in reduce-scatter", GatherFanout, false, 10},
		{"fan-out, dies in all-gather", GatherFanout, true, 5},
		{"fan-out, dies before its first broadcast", GatherFanout, true, 0},
		{"ring, dies in reduce-scatter", GatherRing, false, 10},
		{"ring, dies in all-gather", GatherRing, true, 5},
	} {
		t.Run(tt.name, func(t *testing.T) { deadRank(t, tt.gather, tt.inGather, tt.sends) })
	}
}

func deadRank(t *testing.T, gather GatherMode, inGather bool, sends int64) {
	const world, n, dead = 4, 4096, 2
	const deadline = time.Second
	mt := NewMemTransport(headerSize + 4*32)
	cut := newCutTransport(mt)
	rings := make([]*Ring, world)
	for r := range rings {
		var tr Transport = mt
		if r == dead {
			tr = cut
		}
		ring, err := NewRing(tr, Config{Job: "j", Generation: 1, Rank: r, World: world, Deadline: deadline, Window: 2, Gather: gather})
		if err != nil {
			t.Fatal(err)
		}
		defer ring.Close()
		rings[r] = ring
	}
	bufs := cloneAll(randomVectors(rand.New(rand.NewPCG(1, 1)), world, n))
	// A healthy first step, so the death happens mid-protocol and not
	// while peers are still introducing themselves.
	if errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 1, bufs[r]) }); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	if inGather {
		if errs, _ := onAllRanks(world, func(r int) error { return rings[r].ReduceScatter(context.Background(), 2, bufs[r]) }); errors.Join(errs...) != nil {
			t.Fatal(errors.Join(errs...))
		}
	}
	cut.cutAfter(sends)
	errs, took := onAllRanks(world, func(r int) error {
		if inGather {
			return rings[r].AllGather(context.Background(), 2, bufs[r])
		}
		return rings[r].AllReduce(context.Background(), 2, bufs[r])
	})
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: collective succeeded with rank %d dead", r, dead)
			continue
		}
		if took[r] >= deadline {
			t.Errorf("rank %d took %v, deadline %v: %v", r, took[r], deadline, err)
		}
		if r == dead {
			continue
		}
		var pe *PeerError
		if !errors.As(err, &pe) || pe.Rank != dead {
			t.Errorf("rank %d: error %v does not name rank %d", r, err, dead)
		}
		if !errors.Is(err, ErrSilent) && !errors.Is(err, ErrAborted) {
			t.Errorf("rank %d: error %v is neither silence nor abort", r, err)
		}
	}
	// The ring stays failed.
	if err := rings[0].AllReduce(context.Background(), 3, bufs[0]); err == nil {
		t.Error("collective on a failed ring succeeded")
	}
}

// TestSilentFromStartNamesPeer: a rank that never shows up is named by
// everyone within the deadline.
func TestSilentFromStartNamesPeer(t *testing.T) {
	checkGoroutines(t)
	const world, absent = 3, 1
	const deadline = 600 * time.Millisecond
	rings, _ := memRings(t, world, 16, func(c *Config) { c.Deadline = deadline })
	errs, took := onAllRanks(world, func(r int) error {
		if r == absent {
			return nil
		}
		return rings[r].AllReduce(context.Background(), 1, make([]float32, 100))
	})
	for r, err := range errs {
		if r == absent {
			continue
		}
		var pe *PeerError
		if !errors.As(err, &pe) || pe.Rank != absent {
			t.Errorf("rank %d: error %v does not name rank %d", r, err, absent)
		}
		if took[r] >= deadline {
			t.Errorf("rank %d took %v, deadline %v", r, took[r], deadline)
		}
	}
}

// TestStaleMessagesDropped queues messages of an old generation, another
// job and a finished collective in every inbox before a collective; they
// must be counted and must not change the result.
func TestStaleMessagesDropped(t *testing.T) {
	checkGoroutines(t)
	const world, n = 3, 200
	rings, mt := memRings(t, world, 16, nil)
	rng := rand.New(rand.NewPCG(2, 2))
	bufs := cloneAll(randomVectors(rng, world, n))
	if errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 1, bufs[r]) }); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	// The next collective is seq 3 (reduce-scatter) of step 2.
	cfg := rings[0].cfg
	base := header{phase: phaseReduceScatter, job: jobHash(cfg.Job), gen: cfg.Generation, seq: 3, step: 2, count: 16}
	stale := []header{}
	for _, mutate := range []func(*header){
		func(h *header) { h.gen-- },              // previous generation
		func(h *header) { h.gen++ },              // a generation this rank is not in
		func(h *header) { h.job = jobHash("x") }, // another job
		func(h *header) { h.seq = 1 },            // the finished reduce-scatter
		func(h *header) { h.seq = 2; h.phase = phaseAllGather },
		func(h *header) { h.seq = 1; h.phase = phaseAbort; h.count = 0 },
	} {
		h := base
		mutate(&h)
		stale = append(stale, h)
	}
	// And on the broadcast subject of the fan-out all-gather, from rank 0:
	// every other rank hears them, rank 0 discards them as its own echo.
	gatherBase := base
	gatherBase.phase = phaseGather
	staleGather := []header{}
	for _, mutate := range []func(*header){
		func(h *header) { h.gen-- },
		func(h *header) { h.job = jobHash("x") },
		func(h *header) { h.seq = 2 }, // the finished all-gather
	} {
		h := gatherBase
		mutate(&h)
		staleGather = append(staleGather, h)
	}
	before := make([]Stats, world)
	for r := range world {
		before[r] = rings[r].Stats()
	}
	for r := range world {
		for _, h := range stale {
			h.from = uint16((r + world - 1) % world)
			msg := make([]byte, headerSize+4*int(h.count))
			h.put(msg)
			if err := mt.Send(InboxSubject(cfg.Job, cfg.Generation, r), msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, h := range staleGather {
		msg := make([]byte, headerSize+4*int(h.count))
		h.put(msg)
		if err := mt.Send(GatherSubject(cfg.Job, cfg.Generation), msg); err != nil {
			t.Fatal(err)
		}
	}
	xs := randomVectors(rng, world, n)
	want := ringOrderSum(xs)
	bufs = cloneAll(xs)
	errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 2, bufs[r]) })
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		if i, ok := sameBits(bufs[r], want); !ok {
			t.Fatalf("rank %d: element %d differs after stale messages", r, i)
		}
		sent := len(stale)
		if r != 0 {
			sent += len(staleGather)
		}
		if got := rings[r].Stats().Stale - before[r].Stale; got != uint64(sent) {
			t.Errorf("rank %d: %d stale messages counted, %d sent", r, got, sent)
		}
		if got := rings[r].Stats().Invalid - before[r].Invalid; got != 0 {
			t.Errorf("rank %d: %d messages counted invalid (own broadcasts must be discarded quietly)", r, got)
		}
	}
}

// TestInvalidMessagesDropped puts malformed messages, and well-formed
// ones whose sizes or positions do not fit the collective, in a rank's
// inbox: none may panic, index out of range or change the result.
func TestInvalidMessagesDropped(t *testing.T) {
	checkGoroutines(t)
	const world, n = 3, 200
	// Chunks of 16 floats on a transport that would carry 64.
	rings, mt := memRings(t, world, 64, func(c *Config) { c.ChunkBytes = 64 })
	rng := rand.New(rand.NewPCG(3, 3))
	bufs := cloneAll(randomVectors(rng, world, n))
	if errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 1, bufs[r]) }); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	cfg := rings[1].cfg
	base := header{phase: phaseReduceScatter, from: 0, job: jobHash(cfg.Job), gen: cfg.Generation, seq: 3, step: 2, count: 16}
	encode := func(h header, payloadBytes int) []byte {
		msg := make([]byte, headerSize+payloadBytes)
		h.put(msg)
		return msg
	}
	with := func(mutate func(*header)) []byte {
		h := base
		mutate(&h)
		return encode(h, 4*int(h.count))
	}
	bad := map[string][]byte{
		"empty":                  {},
		"short":                  make([]byte, headerSize-1),
		"zero header":            make([]byte, headerSize),
		"count beyond message":   encode(base, 4*15),
		"count short of message": encode(base, 4*17),
		"huge count":             func() []byte { h := base; h.count = 1<<32 - 1; return encode(h, 64) }(),
		"unknown phase":          with(func(h *header) { h.phase = 99 }),
		"from itself":            with(func(h *header) { h.from = 1 }),
		"from outside the world": with(func(h *header) { h.from = 60000 }),
		"not the left neighbour": with(func(h *header) { h.from = 2 }),
		"hop beyond the ring":    with(func(h *header) { h.hop = 2 }),
		"chunk beyond segment":   with(func(h *header) { h.chunk = 1 << 31 }),
		"chunk of wrong size":    with(func(h *header) { h.count = 15 }),
		"heartbeat with payload": with(func(h *header) { h.phase = phaseHeartbeat; h.count = 4 }),
	}
	badMagic := with(func(*header) {})
	badMagic[0] ^= 0xff
	bad["bad magic"] = badMagic
	badVersion := with(func(*header) {})
	badVersion[2] = 9
	bad["bad version"] = badVersion

	// Fan-out all-gather chunks (seq 4) that do not fit, from rank 0 on the
	// broadcast subject: ranks 1 and 2 must drop them.
	gatherBase := base
	gatherBase.phase, gatherBase.seq = phaseGather, 4
	withGather := func(mutate func(*header)) []byte {
		h := gatherBase
		mutate(&h)
		return encode(h, 4*int(h.count))
	}
	badGather := map[string][]byte{
		"fan-out hop":                  withGather(func(h *header) { h.hop = 1 }),
		"fan-out chunk beyond segment": withGather(func(h *header) { h.chunk = 5 }),
		"fan-out huge chunk":           withGather(func(h *header) { h.chunk = 1<<32 - 1 }),
		"fan-out chunk of wrong size":  withGather(func(h *header) { h.count = 15 }),
		"fan-out from outside":         withGather(func(h *header) { h.from = 3 }),
		"fan-out count beyond message": encode(gatherBase, 4*15),
	}

	before := []Stats{rings[0].Stats(), rings[1].Stats(), rings[2].Stats()}
	for name, msg := range bad {
		if err := mt.Send(InboxSubject(cfg.Job, cfg.Generation, 1), msg); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	for name, msg := range badGather {
		if err := mt.Send(GatherSubject(cfg.Job, cfg.Generation), msg); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	xs := randomVectors(rng, world, n)
	want := ringOrderSum(xs)
	bufs = cloneAll(xs)
	errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 2, bufs[r]) })
	requireSums(t, "after invalid messages", errs, bufs, want)
	// Rank 0 discards its own broadcasts but not the one claiming another
	// sender.
	for r, want := range []int{1, len(bad) + len(badGather), len(badGather)} {
		if got := rings[r].Stats().Invalid - before[r].Invalid; got != uint64(want) {
			t.Errorf("rank %d: %d invalid messages counted, %d sent", r, got, want)
		}
	}
}

// TestMismatchedCollectivesFailFast: ranks that call different collectives
// fail at once, not at the deadline.
func TestMismatchedCollectivesFailFast(t *testing.T) {
	checkGoroutines(t)
	const deadline = 5 * time.Second
	tests := []struct {
		name   string
		call   func(ring *Ring, rank int, buf []float32) error
		gather func(rank int) GatherMode // nil: the default
	}{
		{"different collectives", func(ring *Ring, rank int, buf []float32) error {
			if rank == 0 {
				return ring.ReduceScatter(context.Background(), 1, buf)
			}
			return ring.AllGather(context.Background(), 1, buf)
		}, nil},
		{"different steps", func(ring *Ring, rank int, buf []float32) error {
			return ring.ReduceScatter(context.Background(), uint64(rank), buf)
		}, nil},
		{"different all-gathers", func(ring *Ring, rank int, buf []float32) error {
			return ring.AllGather(context.Background(), 1, buf)
		}, func(rank int) GatherMode { return gatherModes[rank] }},
		{"different all-gathers, ring first", func(ring *Ring, rank int, buf []float32) error {
			return ring.AllGather(context.Background(), 1, buf)
		}, func(rank int) GatherMode { return gatherModes[1-rank] }},
	}
	for _, tt := range tests {
		rings, _ := memRings(t, 2, 16, func(c *Config) {
			c.Deadline = deadline
			if tt.gather != nil {
				c.Gather = tt.gather(c.Rank)
			}
		})
		errs, took := onAllRanks(2, func(r int) error { return tt.call(rings[r], r, make([]float32, 64)) })
		for r, err := range errs {
			if !errors.Is(err, ErrMismatch) && !errors.Is(err, ErrAborted) {
				t.Errorf("%s: rank %d: %v, want a mismatch", tt.name, r, err)
			}
			if took[r] > deadline/2 {
				t.Errorf("%s: rank %d took %v", tt.name, r, took[r])
			}
		}
	}
}

// TestCancelAbortsPeers: a rank whose context is cancelled returns the
// context's error, and its peers learn of it at once instead of waiting
// for their deadline.
func TestCancelAbortsPeers(t *testing.T) {
	checkGoroutines(t)
	const world, quitter = 3, 0
	const deadline = 5 * time.Second
	rings, _ := memRings(t, world, 16, func(c *Config) { c.Deadline = deadline })
	ctx, cancel := context.WithCancel(context.Background())
	errs, took := onAllRanks(world, func(r int) error {
		if r == quitter {
			go func() { time.Sleep(50 * time.Millisecond); cancel() }()
			return rings[r].AllReduce(ctx, 1, make([]float32, 64))
		}
		// Rank 1 never joins, so the collective cannot finish.
		if r == 1 {
			return nil
		}
		return rings[r].AllReduce(context.Background(), 1, make([]float32, 64))
	})
	if !errors.Is(errs[quitter], context.Canceled) {
		t.Errorf("rank %d: %v, want context.Canceled", quitter, errs[quitter])
	}
	var pe *PeerError
	if !errors.As(errs[2], &pe) || !errors.Is(errs[2], ErrAborted) || pe.Rank != quitter {
		t.Errorf("rank 2: %v, want an abort naming rank %d", errs[2], quitter)
	}
	if took[2] > deadline/2 {
		t.Errorf("rank 2 took %v", took[2])
	}
}

func TestClosedRing(t *testing.T) {
	checkGoroutines(t)
	rings, _ := memRings(t, 2, 16, nil)
	rings[0].Close()
	if err := rings[0].AllReduce(context.Background(), 1, make([]float32, 10)); !errors.Is(err, ErrClosed) {
		t.Errorf("all-reduce on a closed ring: %v, want ErrClosed", err)
	}
	if err := rings[0].Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
