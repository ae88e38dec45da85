package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
	"unsafe"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/shard"
)

// tcpRing is the benchmark's reference: the same segments, chunks, hop
// schedule and summation order as Ring, over a direct TCP connection to
// each neighbour, with no server, headers, validation or deadlines —
// what a ring on this network can do without a message bus. Results are
// bit-identical to Ring's.
type tcpRing struct {
	rank, world int
	chunk       int
	in, out     net.Conn // from the left neighbour, to the right one
	scratch     []float32
}

// dialTCPRings connects world ranks in a ring over loopback.
func dialTCPRings(world, chunkFloats int) ([]*tcpRing, func(), error) {
	rings := make([]*tcpRing, world)
	for r := range rings {
		rings[r] = &tcpRing{rank: r, world: world, chunk: chunkFloats, scratch: make([]float32, chunkFloats)}
	}
	closeAll := func() {
		for _, t := range rings {
			for _, c := range []net.Conn{t.in, t.out} {
				if c != nil {
					c.Close()
				}
			}
		}
	}
	if world == 1 {
		return rings, closeAll, nil
	}
	listeners := make([]net.Listener, world)
	defer func() {
		for _, l := range listeners {
			if l != nil {
				l.Close()
			}
		}
	}()
	for r := range listeners {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("tcp ring: listen for rank %d: %w", r, err)
		}
		listeners[r] = l
	}
	for r := range rings {
		out, err := net.Dial("tcp", listeners[(r+1)%world].Addr().String())
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("tcp ring: rank %d dials rank %d: %w", r, (r+1)%world, err)
		}
		rings[r].out = out
		in, err := listeners[(r+1)%world].Accept()
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("tcp ring: rank %d accepts rank %d: %w", (r+1)%world, r, err)
		}
		rings[(r+1)%world].in = in
	}
	return rings, closeAll, nil
}

func (t *tcpRing) allReduce(buf []float32) error {
	if err := t.pass(true, buf); err != nil {
		return fmt.Errorf("tcp reduce-scatter rank %d: %w", t.rank, err)
	}
	if err := t.pass(false, buf); err != nil {
		return fmt.Errorf("tcp all-gather rank %d: %w", t.rank, err)
	}
	return nil
}

// pass is one reduce-scatter (reduce) or all-gather. A writer goroutine
// sends queued spans of buf while this goroutine reads: with one goroutine
// doing both, every rank would block in write once socket buffers fill
// and the ring would deadlock.
func (t *tcpRing) pass(reduce bool, buf []float32) error {
	if t.world == 1 {
		return nil
	}
	layout := shard.Layout{Total: len(buf), World: t.world}
	mod := func(i int) int { return ((i % t.world) + t.world) % t.world }
	sendSeg := func(k int) int {
		if reduce {
			return mod(t.rank - k - 1)
		}
		return mod(t.rank - k)
	}
	spans := func(seg int) [][]float32 {
		lo, hi := layout.Range(seg)
		var s [][]float32
		for a := lo; a < hi; a += t.chunk {
			s = append(s, buf[a:min(a+t.chunk, hi)])
		}
		return s
	}
	deadline := time.Now().Add(5 * time.Minute)
	t.in.SetDeadline(deadline)
	t.out.SetDeadline(deadline)

	queue := make(chan []float32, len(buf)/t.chunk+4*t.world)
	werr := make(chan error, 1)
	go func() {
		var err error
		for span := range queue {
			if err == nil {
				_, err = t.out.Write(nativeBytes(span))
			}
		}
		werr <- err
	}()
	for _, s := range spans(sendSeg(0)) {
		queue <- s
	}
	var rerr error
	for k := 0; k < t.world-1 && rerr == nil; k++ {
		last := k == t.world-2
		for _, dst := range spans(sendSeg(k + 1)) {
			if reduce {
				recv := t.scratch[:len(dst)]
				if _, rerr = io.ReadFull(t.in, nativeBytes(recv)); rerr != nil {
					break
				}
				allreduce.SumF32(dst, recv, dst)
			} else if _, rerr = io.ReadFull(t.in, nativeBytes(dst)); rerr != nil {
				break
			}
			if !last {
				queue <- dst
			}
		}
	}
	close(queue)
	if rerr != nil {
		// Unblock the writer, whose peer may be gone too.
		t.out.Close()
	}
	return errors.Join(rerr, <-werr)
}

// nativeBytes is the memory of f as bytes, for socket I/O between two
// buffers of the same machine (the reference ring never leaves one host).
func nativeBytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}
