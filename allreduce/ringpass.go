package allreduce

import (
	"fmt"

	"github.com/modcoord/modcoord/shard"
)

// ringPass is one reduce-scatter or all-gather around the ring.
//
// The vector is cut into World segments (shard.Layout), segment s being
// rank s's range, and each segment into chunks of at most chunkFloats. In hop k
// (0 <= k < World-1) rank r sends segment sendSeg(k) to its right
// neighbour and receives segment recvSeg(k) = sendSeg(k+1) from its left
// neighbour:
//
//	reduce-scatter: sendSeg(k) = r-k-1, recvSeg(k) = r-k-2 (mod World)
//	all-gather:     sendSeg(k) = r-k,   recvSeg(k) = r-k-1
//
// Hop 0 sends the rank's own data; every later hop forwards, chunk by
// chunk, what has just been received, so hops overlap (pipelining). The
// reduce-scatter's last hop receives segment r itself, fully summed.
//
// Summation order: segment s starts as rank s+1's values and each rank
// along the ring adds its own as the right operand,
//
//	sum_s = (((x[s+1] + x[s+2]) + x[s+3]) + ...) + x[s]   (ranks mod World)
//
// in float32. It depends only on World and s, never on timing, so the
// result is bit-identical from run to run.
type ringPass struct {
	r     *Ring
	phase phase
	chunking

	// recvBase[k] is the index in got of hop k's first chunk.
	recvBase []int
	got      []bool
	want     int // data messages to receive
	received int
	sent     int // data messages sent, forwards included
	next     int // next hop-0 chunk to send
	first    int // hop-0 chunks in all
	// scratch holds a dequantized chunk in an int8 pass.
	scratch []float32
}

// reduces reports whether the pass sums (a reduce-scatter, float32 or int8).
func (rp *ringPass) reduces() bool {
	return rp.phase == phaseReduceScatter || rp.phase == phaseReduceScatterInt8
}

// Pipelining needs several chunks per segment: with one, every hop is a
// store-and-forward of the whole segment. So a pass over a mid-sized
// vector cuts its segments into at least minChunksPerSegment chunks, as
// long as they stay above minChunkFloats, where per-message costs would
// start to dominate.
const (
	minChunksPerSegment = 4
	minChunkFloats      = 4096 // 16 KiB
)

func (r *Ring) newRingPass(p phase, buf []float32) *ringPass {
	layout := r.Layout(len(buf))
	rp := &ringPass{r: r, phase: p, chunking: chunking{buf: buf, layout: layout, chunk: r.passChunk(layout)}}
	hops := r.cfg.World - 1
	rp.recvBase = make([]int, hops+1)
	for k := range hops {
		rp.recvBase[k+1] = rp.recvBase[k] + rp.chunks(rp.recvSeg(k))
	}
	rp.want = rp.recvBase[hops]
	rp.got = make([]bool, rp.want)
	rp.first = rp.chunks(rp.sendSeg(0))
	if p == phaseReduceScatterInt8 {
		rp.scratch = make([]float32, rp.chunk)
	}
	return rp
}

// passChunk is the chunk, in floats, of a pass over layout. Rank 0's
// segment is the longest. Every rank computes the same chunk from the
// length and the world, so headers agree.
func (r *Ring) passChunk(layout shard.Layout) int {
	perSegment := (layout.Len(0) + minChunksPerSegment - 1) / minChunksPerSegment
	perSegment = (perSegment + shard.Align - 1) / shard.Align * shard.Align
	return min(r.chunkFloats, max(perSegment, minChunkFloats))
}

func (rp *ringPass) mod(i int) int {
	w := rp.r.cfg.World
	return ((i % w) + w) % w
}

func (rp *ringPass) sendSeg(k int) int {
	if rp.reduces() {
		return rp.mod(rp.r.cfg.Rank - k - 1)
	}
	return rp.mod(rp.r.cfg.Rank - k)
}

func (rp *ringPass) recvSeg(k int) int { return rp.sendSeg(k + 1) }

// chunking is how a pass cuts buf: segment s is rank s's range
// (layout), cut into chunks of chunk floats, the last one shorter.
type chunking struct {
	buf    []float32
	layout shard.Layout
	chunk  int // floats per chunk in this pass
}

func (ck chunking) chunks(seg int) int {
	n, c := ck.layout.Len(seg), ck.chunk
	return (n + c - 1) / c
}

// span is the part of buf that chunk c of segment seg covers.
func (ck chunking) span(seg, c int) []float32 {
	a, b := ck.bounds(seg, c)
	return ck.buf[a:b]
}

// bounds is span as indices into buf.
func (ck chunking) bounds(seg, c int) (int, int) {
	lo, hi := ck.layout.Range(seg)
	a := lo + c*ck.chunk
	return a, min(a+ck.chunk, hi)
}

// claim checks that h is a chunk of segment seg with the right count and
// not yet received, marks got[base+chunk], and returns where it goes.
// Every check runs before buf is touched.
func (ck chunking) claim(h header, seg int, got []bool, base int) ([]float32, error) {
	if int64(h.chunk) >= int64(ck.chunks(seg)) {
		return nil, fmt.Errorf("%w: chunk %d of segment %d, which has %d", errInvalid, h.chunk, seg, ck.chunks(seg))
	}
	c := int(h.chunk)
	dst := ck.span(seg, c)
	if int(h.count) != len(dst) {
		return nil, fmt.Errorf("%w: chunk %d of segment %d has %d floats, message %d", errInvalid, c, seg, len(dst), h.count)
	}
	if got[base+c] {
		return nil, fmt.Errorf("%w: chunk %d of segment %d, hop %d", errDuplicate, c, seg, h.hop)
	}
	got[base+c] = true
	return dst, nil
}

func (rp *ringPass) accepts(p phase) bool { return p == rp.phase }

func (rp *ringPass) ready() bool { return rp.r.peers[rp.r.right].heard }

func (rp *ringPass) finished() bool { return rp.received == rp.want && rp.next == rp.first }

// pump sends the rank's own chunks while the window allows. Forwards do
// not count against the window (they replace what was received), so it
// bounds what each rank injects: at most World*Window chunks are ever in
// flight around the ring, which bounds what the NATS server must buffer
// per subscriber. The last hop's receipts free the window, so it cannot
// deadlock (docs/allreduce.md has the argument).
func (rp *ringPass) pump() error {
	r := rp.r
	for rp.next < rp.first && rp.sent-rp.received < r.cfg.Window {
		lo, hi := rp.bounds(rp.sendSeg(0), rp.next)
		h := r.header(r.cur(), rp.phase)
		h.chunk, h.count = uint32(rp.next), uint32(hi-lo)
		var err error
		if rp.phase == phaseReduceScatterInt8 {
			msg := r.sendBuf[:headerSize+int(h.phase.payloadBytes(h.count))]
			h.put(msg)
			QuantizeInt8(msg[headerSize:], rp.buf[lo:hi])
			err = r.send(r.cur(), r.right, msg)
		} else {
			err = r.sendData(r.cur(), r.right, h, rp.buf, lo, hi)
		}
		if err != nil {
			return fmt.Errorf("hop 0 chunk %d: %w", rp.next, err)
		}
		rp.next++
		rp.sent++
	}
	return nil
}

// deliver checks every size in h against what this rank expects before
// touching buf, then adds (reduce-scatter) or copies (all-gather) the
// chunk and forwards it unless this was the last hop. The forward reuses
// the received message: only the header's from and hop change.
func (rp *ringPass) deliver(h header, msg []byte) error {
	r := rp.r
	if int(h.from) != r.left {
		return fmt.Errorf("%w: data from rank %d, left neighbour is %d", errInvalid, h.from, r.left)
	}
	hop := int(h.hop)
	if hop >= r.cfg.World-1 {
		return fmt.Errorf("%w: hop %d of %d", errInvalid, hop, r.cfg.World-1)
	}
	dst, err := rp.claim(h, rp.recvSeg(hop), rp.got, rp.recvBase[hop])
	if err != nil {
		return err
	}
	rp.received++

	payload := msg[headerSize:]
	last := hop == r.cfg.World-2
	switch {
	case rp.phase == phaseReduceScatterInt8 && last:
		DequantizeAddInt8(dst, payload)
	case rp.phase == phaseReduceScatterInt8:
		addInt8InPayload(payload, dst, rp.scratch[:len(dst)])
	case rp.phase == phaseReduceScatter && last:
		addF32(dst, payload)
	case rp.phase == phaseReduceScatter:
		addF32InPayload(payload, dst)
	default:
		getF32(dst, payload)
	}
	if last {
		return nil
	}
	h.from, h.hop = uint16(r.cfg.Rank), uint16(hop+1)
	h.put(msg)
	if err := r.send(r.cur(), r.right, msg); err != nil {
		return err
	}
	rp.sent++
	return nil
}
