package peerstate

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/shard"
)

// ring is world ranks' stores, replicators and owners' optimizers over one
// in-memory bus, stepping a shared parameter vector as the all-gather would.
type ring struct {
	l      shard.Layout
	params []float32
	opts   []*shard.Optimizer
	stores []*Store
	reps   []*Replicator
	ocfg   mod.OptimConfig
	rng    *rand.Rand
}

const testTotal = 1000 // not a multiple of Align: a short last range

func newRing(t *testing.T, tr allreduce.Transport, world int, total int64) *ring {
	t.Helper()
	l, _ := shard.NewLayout(testTotal, world)
	ocfg := mod.DefaultOptim()
	ocfg.WarmupSteps = 2
	decay := [][2]int{{100, 400}, {600, 900}}
	rg := &ring{l: l, params: make([]float32, testTotal), ocfg: ocfg, rng: rand.New(rand.NewPCG(1, 2))}
	for i := range rg.params {
		rg.params[i] = float32(rg.rng.NormFloat64() * 0.02)
	}
	for r := range world {
		o, err := shard.NewOptimizer(ocfg, l, r, decay)
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{Job: "job-1", Generation: 3, Rank: r, Layout: l, Optim: ocfg, Decay: decay, TotalSteps: total})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Init(0, rg.params, o.M, o.V, nil, nil); err != nil {
			t.Fatal(err)
		}
		_, nlo, nhi, _ := s.NeighbourRange()
		rep, err := NewReplicator(tr, "job-1", 3, r, world, o.Hi-o.Lo, nhi-nlo)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rep.Close() })
		rg.opts, rg.stores, rg.reps = append(rg.opts, o), append(rg.stores, s), append(rg.reps, rep)
	}
	return rg
}

// step runs one step on every rank: owners update their ranges, send
// their gradient chunk, record their range, and replay their neighbour's.
func (rg *ring) step(t *testing.T, s int64) {
	t.Helper()
	grads := make([]float32, testTotal)
	for i := range grads {
		grads[i] = float32(rg.rng.NormFloat64())
	}
	sumSq := mod.SumSquares(grads)
	lr := rg.ocfg.LRAt(int(s-1), 10)
	for r, o := range rg.opts {
		if err := o.Update(rg.params, grads, int(s), lr, rg.ocfg.ClipScale(sumSq)); err != nil {
			t.Fatal(err)
		}
		if err := rg.reps[r].Send(s, grads[o.Lo:o.Hi]); err != nil {
			t.Fatal(err)
		}
	}
	for r, o := range rg.opts {
		if err := rg.stores[r].RecordOwn(s, rg.params, o.M, o.V); err != nil {
			t.Fatal(err)
		}
		chunk, err := rg.reps[r].Receive(context.Background(), s, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := rg.stores[r].AdvanceNeighbour(s, chunk, sumSq, rg.params); err != nil {
			t.Fatal(err)
		}
	}
}

// TestInMemoryReplicaMatchesOwner: replaying the owner's AdamW update from
// its reduced gradient chunk gives the owner's parameters and moments bit
// for bit, step after step, with chunks smaller than a range; both of the
// last two steps are held, older ones are not.
func TestInMemoryReplicaMatchesOwner(t *testing.T) {
	for _, world := range []int{2, 3, 5} {
		tr := allreduce.NewMemTransport(chunkHeader + 4*37) // 37 floats a message
		rg := newRing(t, tr, world, 10)
		for s := int64(1); s <= 4; s++ {
			rg.step(t, s) // AdvanceNeighbour checks the parameters bit for bit
		}
		for r, st := range rg.stores {
			nb, lo, hi, _ := st.NeighbourRange()
			o := rg.opts[nb]
			got := make([]float32, hi-lo)
			for _, part := range []struct {
				p    Part
				want []float32
			}{{AdamM, o.M}, {AdamV, o.V}, {Params, rg.params[lo:hi]}} {
				if err := st.Read(nb, 4, part.p, lo, hi, got); err != nil {
					t.Fatal(err)
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(part.want[i]) {
						t.Fatalf("world %d rank %d: replica %s[%d] = %v, owner has %v", world, r, part.p, lo+i, got[i], part.want[i])
					}
				}
			}
			h := st.Holdings()
			if len(h) != 2 || h[0].Rank != r || h[1].Rank != nb || len(h[1].Steps) != 2 || h[1].Steps[0] != 3 || h[1].Steps[1] != 4 {
				t.Fatalf("world %d rank %d: holdings %+v, want own and %d at steps 3 and 4", world, r, h, nb)
			}
			if err := st.Read(nb, 2, AdamM, lo, hi, got); err == nil || !strings.Contains(err.Error(), "not held at step 2") {
				t.Fatalf("step 2 of a store at steps 3 and 4: %v", err)
			}
		}
	}
}

// TestInMemoryReplicaRefusesADivergedUpdate: a gradient chunk that is not
// the one the owner used (here one flipped bit) makes the replay differ
// from the all-gathered parameters; the replica refuses it and holds no
// state at that step.
func TestInMemoryReplicaRefusesADivergedUpdate(t *testing.T) {
	rg := newRing(t, allreduce.NewMemTransport(1<<20), 2, 10)
	grads := make([]float32, testTotal)
	for i := range grads {
		grads[i] = 1
	}
	o := rg.opts[1]
	if err := o.Update(rg.params, grads, 1, 1e-3, 1); err != nil {
		t.Fatal(err)
	}
	chunk := append([]float32(nil), grads[o.Lo:o.Hi]...)
	chunk[3] = math.Float32frombits(math.Float32bits(chunk[3]) ^ 1<<20)
	err := rg.stores[0].AdvanceNeighbour(1, chunk, mod.SumSquares(grads), rg.params)
	if err == nil || !strings.Contains(err.Error(), "diverged") {
		t.Fatalf("a flipped gradient bit: %v", err)
	}
	if h := rg.stores[0].Holdings(); len(h) != 2 || len(h[1].Steps) != 1 || h[1].Steps[0] != 0 {
		t.Fatalf("holdings after the refused step %+v, want the neighbour at step 0 only", h)
	}
}

// TestInMemoryFetch: a new rank fetches a range from another generation's
// store over the bus, in several requests; a request for a step or range
// the store does not hold is answered with the reason, and malformed or
// forged messages change nothing.
func TestInMemoryFetch(t *testing.T) {
	tr := allreduce.NewMemTransport(replyHeader + 4*64) // 64 floats a reply
	rg := newRing(t, tr, 3, 10)
	rg.step(t, 1)
	rg.step(t, 2)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	stop, err := Serve(tr, rg.stores[1], log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	f, err := NewFetcher(tr, "job-1", 4, 0, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	// Rank 1 holds range 0 as the replica.
	lo, hi := rg.l.Range(0)
	got := make([]float32, hi-lo)
	if err := f.Fetch(ctx, Source{Generation: 3, Rank: 1, Range: 0, Step: 2}, AdamV, lo, hi, got); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(rg.opts[0].V[i]) {
			t.Fatalf("fetched v[%d] = %v, owner has %v", lo+i, got[i], rg.opts[0].V[i])
		}
	}
	for _, tc := range []struct {
		name string
		src  Source
		want string
	}{
		{"a step not held", Source{Generation: 3, Rank: 1, Range: 0, Step: 0}, "not held at step 0"},
		{"a range not held", Source{Generation: 3, Rank: 1, Range: 2, Step: 2}, "holds no range 2"},
	} {
		err := f.Fetch(ctx, tc.src, Params, lo, lo+10, got[:10])
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Garbage to the server and a forged reply to the fetcher are dropped.
	for _, msg := range [][]byte{nil, []byte("CMRQ"), make([]byte, requestHeader+3)} {
		if err := tr.Send(ServeSubject("job-1", 3, 1), msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Send(ReplySubject("job-1", 4, 0), make([]byte, replyHeader+4)); err != nil {
		t.Fatal(err)
	}
	// A request whose reply would go outside the job's subjects.
	bad := request{id: 99, step: 2, rank: 0, part: Params, lo: 0, hi: 4, reply: "elsewhere.x"}
	if err := tr.Send(ServeSubject("job-1", 3, 1), bad.encode()); err != nil {
		t.Fatal(err)
	}
	lo1, hi1 := rg.l.Range(1)
	own := make([]float32, hi1-lo1)
	if err := f.Fetch(ctx, Source{Generation: 3, Rank: 1, Range: 1, Step: 2}, Params, lo1, hi1, own); err != nil {
		t.Fatalf("after the garbage: %v", err)
	}
	for i := range own {
		if math.Float32bits(own[i]) != math.Float32bits(rg.params[lo1+i]) {
			t.Fatalf("fetched params[%d] = %v, want %v", lo1+i, own[i], rg.params[lo1+i])
		}
	}
}

// A malformed chunk (here one that starts past offset 0) is dropped
// without claiming a buffer: one for step 4 must not hold the buffer step
// 2 shares with it, or step 2 could never complete.
func TestReplicaMalformedChunkDoesNotClaimTheStep(t *testing.T) {
	tr := allreduce.NewMemTransport(chunkHeader + 4*64)
	rep, err := NewReplicator(tr, "job-1", 3, 1, 2, 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	bad := make([]byte, chunkHeader+4)
	binary.LittleEndian.PutUint32(bad[0:], magicChunk)
	binary.LittleEndian.PutUint64(bad[4:], 4)  // step 4
	binary.LittleEndian.PutUint32(bad[12:], 7) // offset 7: not the first chunk
	binary.LittleEndian.PutUint32(bad[16:], 1)
	if err := tr.Send(ReplicaSubject("job-1", 3, 1), bad); err != nil {
		t.Fatal(err)
	}
	sender, err := NewReplicator(tr, "job-1", 3, 0, 2, 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	grad := make([]float32, 100)
	for i := range grad {
		grad[i] = float32(i)
	}
	if err := sender.Send(2, grad); err != nil {
		t.Fatal(err)
	}
	got, err := rep.Receive(context.Background(), 2, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != grad[i] {
			t.Fatalf("element %d = %v, want %v", i, got[i], grad[i])
		}
	}
}
