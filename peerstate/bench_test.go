package peerstate

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/shard"
)

// BenchmarkReplication is one rank's extra work per training step for a
// range of 1 Mi floats (4 MiB) in a world of two: send its gradient chunk,
// record its range, receive the neighbour's chunk and replay its AdamW
// update (the neighbour's send is timed too: it stands in for the bus).
// BenchmarkOwnerUpdate is the owner's own AdamW update of the same range,
// the work a step already does, for the ratio.
func BenchmarkReplication(b *testing.B) {
	const per = 1 << 20
	l, _ := shard.NewLayout(2*per, 2)
	ocfg := mod.DefaultOptim()
	params := make([]float32, 2*per)
	grads := make([]float32, 2*per)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range grads {
		params[i], grads[i] = float32(rng.NormFloat64()*0.02), float32(rng.NormFloat64())
	}
	tr := allreduce.NewMemTransport(8 << 20)
	var opts [2]*shard.Optimizer
	var stores [2]*Store
	var reps [2]*Replicator
	for r := range 2 {
		opts[r], _ = shard.NewOptimizer(ocfg, l, r, nil)
		stores[r], _ = New(Config{Job: "b", Generation: 1, Rank: r, Layout: l, Optim: ocfg, TotalSteps: 1 << 30})
		if err := stores[r].Init(0, params, opts[r].M, opts[r].V, nil, nil); err != nil {
			b.Fatal(err)
		}
		var err error
		if reps[r], err = NewReplicator(tr, "b", 1, r, 2, per, per); err != nil {
			b.Fatal(err)
		}
		defer reps[r].Close()
	}
	sumSq := mod.SumSquares(grads)
	b.SetBytes(4 * per)
	b.ResetTimer()
	for i := range b.N {
		s := int64(i + 1)
		b.StopTimer()
		for _, o := range opts {
			if err := o.Update(params, grads, int(s), ocfg.LRAt(i, 1<<30), ocfg.ClipScale(sumSq)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := reps[1].Send(s, grads[per:]); err != nil {
			b.Fatal(err)
		}
		if err := reps[0].Send(s, grads[:per]); err != nil {
			b.Fatal(err)
		}
		if err := stores[0].RecordOwn(s, params, opts[0].M, opts[0].V); err != nil {
			b.Fatal(err)
		}
		chunk, err := reps[0].Receive(context.Background(), s, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if err := stores[0].AdvanceNeighbour(s, chunk, sumSq, params); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		// Rank 1's side, untimed, keeps its replica in step.
		if err := stores[1].RecordOwn(s, params, opts[1].M, opts[1].V); err != nil {
			b.Fatal(err)
		}
		chunk, err = reps[1].Receive(context.Background(), s, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if err := stores[1].AdvanceNeighbour(s, chunk, sumSq, params); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkOwnerUpdate(b *testing.B) {
	const per = 1 << 20
	l, _ := shard.NewLayout(2*per, 2)
	ocfg := mod.DefaultOptim()
	params, grads := make([]float32, 2*per), make([]float32, 2*per)
	for i := range grads {
		grads[i] = 1e-3
	}
	o, _ := shard.NewOptimizer(ocfg, l, 0, nil)
	b.SetBytes(4 * per)
	for i := range b.N {
		if err := o.Update(params, grads, i+1, 1e-3, 1); err != nil {
			b.Fatal(err)
		}
	}
}
