package peerstate

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/modcoord/modcoord/allreduce"
)

// Replicator carries the reduced gradient chunks around the ring: each
// step a rank sends its own range's chunk to its right neighbour and
// receives its left neighbour's.
type Replicator struct {
	tr        allreduce.Transport
	out       string // the right neighbour's replica subject
	stop      func() error
	maxFloats int
	msg       []byte // send buffer, reused

	mu   sync.Mutex
	bufs [2]incoming // by step parity: the awaited step and the next
	// ready is signalled (without blocking) after a message landed.
	ready   chan struct{}
	dropped int64 // messages refused: malformed, out of order, unexpected step
}

// incoming gathers one step's chunks of the neighbour's range.
type incoming struct {
	step int64 // -1: free
	got  int
	data []float32
}

// NewReplicator listens for rank's left neighbour's chunks; its own range
// has ownLen elements and the neighbour's nbLen.
func NewReplicator(tr allreduce.Transport, job string, generation uint64, rank, world, ownLen, nbLen int) (*Replicator, error) {
	if world < 2 {
		return nil, fmt.Errorf("replicator: world %d has no neighbour", world)
	}
	r := &Replicator{
		tr: tr, out: ReplicaSubject(job, generation, (rank+1)%world),
		maxFloats: chunkFloats(tr.MaxMessage(), chunkHeader), ready: make(chan struct{}, 1),
	}
	r.msg = make([]byte, chunkHeader+4*min(r.maxFloats, max(ownLen, 1)))
	for i := range r.bufs {
		r.bufs[i] = incoming{step: -1, data: make([]float32, nbLen)}
	}
	stop, err := tr.Listen(ReplicaSubject(job, generation, rank), r.handle)
	if err != nil {
		return nil, fmt.Errorf("replicator of rank %d: %w", rank, err)
	}
	r.stop = stop
	return r, nil
}

// Close stops listening.
func (r *Replicator) Close() error { return r.stop() }

// Send sends step's reduced gradient of this rank's range to its right
// neighbour, in chunks the bus carries.
func (r *Replicator) Send(step int64, grad []float32) error {
	le := binary.LittleEndian
	for off := 0; off < len(grad) || off == 0; off += r.maxFloats {
		n := min(r.maxFloats, len(grad)-off)
		msg := r.msg[:chunkHeader+4*n]
		le.PutUint32(msg[0:], magicChunk)
		le.PutUint64(msg[4:], uint64(step))
		le.PutUint32(msg[12:], uint32(off))
		le.PutUint32(msg[16:], uint32(n))
		putFloats(msg[chunkHeader:], grad[off:off+n])
		if err := r.tr.Send(r.out, msg); err != nil {
			return fmt.Errorf("replicate step %d: %w", step, err)
		}
		if len(grad) == 0 {
			break
		}
	}
	return nil
}

// handle files one chunk. A chunk for a step other than the two it can be
// waiting for, out of order, or whose sizes disagree is dropped: the
// awaited step then times out, as a lost message would make it.
func (r *Replicator) handle(msg []byte) {
	le := binary.LittleEndian
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(msg) < chunkHeader || le.Uint32(msg) != magicChunk {
		r.dropped++
		return
	}
	step := int64(le.Uint64(msg[4:]))
	off, n := int(le.Uint32(msg[12:])), int(le.Uint32(msg[16:]))
	b := &r.bufs[step&1]
	if step < 0 || (b.step != step && b.step != -1) {
		r.dropped++
		return
	}
	got := b.got
	if b.step == -1 {
		got = 0
	}
	// Checked before a free buffer is claimed: a malformed chunk must not
	// hold the buffer for a step that then never completes.
	if off != got || n > len(b.data)-off || len(msg) != chunkHeader+4*n {
		r.dropped++
		return
	}
	b.step, b.got = step, got
	getFloats(b.data[off:off+n], msg[chunkHeader:])
	b.got += n
	select {
	case r.ready <- struct{}{}:
	default:
	}
}

// Receive waits, at most timeout, for the whole chunk of step from the
// left neighbour. The slice is valid until the Receive of step+2.
func (r *Replicator) Receive(ctx context.Context, step int64, timeout time.Duration) ([]float32, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		b := &r.bufs[step&1]
		if b.step == step && b.got == len(b.data) {
			data := b.data
			b.step = -1 // free for step+2
			r.mu.Unlock()
			return data, nil
		}
		got, dropped := b.got, r.dropped
		if b.step != step {
			got = 0
		}
		r.mu.Unlock()
		select {
		case <-r.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, fmt.Errorf("replica gradient of step %d: %d of %d elements after %s (%d messages dropped)", step, got, len(b.data), timeout, dropped)
		}
	}
}
