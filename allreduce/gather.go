package allreduce

import "fmt"

// gatherPass is the fan-out all-gather (GatherFanout). Rank r publishes
// each chunk of its own segment (its range, shard.Layout) once to the
// generation's broadcast subject; every other rank receives it there and
// copies it into place. One publish per chunk reaches all World-1 peers,
// where the ring needs World-1 forwards, and every chunk arrives in one
// hop.
//
// Pacing: rank r may publish its chunk i only once it has received at
// least i-Window+1 chunks from every peer p (or all of p's chunks, if p
// has fewer). That bounds what is in flight from r to any q by 2·Window
// chunks, and so what the server queues for a subscriber by
// 2·Window·(World-1) chunks, and it cannot deadlock: docs/allreduce.md
// has both arguments.
type gatherPass struct {
	r *Ring
	chunking

	base     []int  // base[p] is the index in got of rank p's chunk 0
	got      []bool // chunks received, by rank and chunk
	recv     []int  // chunks received from each rank
	want     int    // data messages to receive
	received int
	next     int // next own chunk to publish
	own      int // own chunks in all
}

func (r *Ring) newGatherPass(buf []float32) *gatherPass {
	layout := r.Layout(len(buf))
	gp := &gatherPass{r: r, chunking: chunking{buf: buf, layout: layout, chunk: r.passChunk(layout)}}
	w := r.cfg.World
	gp.base = make([]int, w+1)
	for p := range w {
		n := 0
		if p != r.cfg.Rank {
			n = gp.chunks(p)
		}
		gp.base[p+1] = gp.base[p] + n
	}
	gp.want = gp.base[w]
	gp.got = make([]bool, gp.want)
	gp.recv = make([]int, w)
	gp.own = gp.chunks(r.cfg.Rank)
	return gp
}

func (gp *gatherPass) accepts(p phase) bool { return p == phaseGather }

// ready: a broadcast reaches only the peers already subscribed, and
// hearing from a peer proves it subscribed to the broadcast subject too
// (NewRing subscribes to both before the rank sends anything).
func (gp *gatherPass) ready() bool { return gp.r.allHeard() }

func (gp *gatherPass) finished() bool { return gp.received == gp.want && gp.next == gp.own }

// mayPublish says whether own chunk i is within the window of every peer.
func (gp *gatherPass) mayPublish(i int) bool {
	need := i - gp.r.cfg.Window + 1
	if need <= 0 {
		return true
	}
	for p, n := range gp.recv {
		if p != gp.r.cfg.Rank && n < min(need, gp.chunks(p)) {
			return false
		}
	}
	return true
}

func (gp *gatherPass) pump() error {
	r := gp.r
	for gp.next < gp.own && gp.mayPublish(gp.next) {
		lo, hi := gp.bounds(r.cfg.Rank, gp.next)
		h := r.header(r.cur(), phaseGather)
		h.chunk, h.count = uint32(gp.next), uint32(hi-lo)
		if err := r.sendData(r.cur(), broadcast, h, gp.buf, lo, hi); err != nil {
			return fmt.Errorf("chunk %d: %w", gp.next, err)
		}
		gp.next++
	}
	return nil
}

// deliver checks every size in h against what this rank expects of the
// sender's segment before touching buf, then copies the chunk in place.
// dispatch has already checked that from is a peer of this world.
func (gp *gatherPass) deliver(h header, msg []byte) error {
	from := int(h.from)
	if h.hop != 0 {
		return fmt.Errorf("%w: fan-out chunk with hop %d", errInvalid, h.hop)
	}
	dst, err := gp.claim(h, from, gp.got, gp.base[from])
	if err != nil {
		return err
	}
	gp.recv[from]++
	gp.received++
	getF32(dst, msg[headerSize:])
	return nil
}

// waitingFor is the peer with the largest share of its chunks still
// missing, or -1 if none is missing.
func (gp *gatherPass) waitingFor() int {
	worst, missing := -1, 0.0
	for p, n := range gp.recv {
		if p == gp.r.cfg.Rank {
			continue
		}
		if total := gp.chunks(p); n < total {
			if f := float64(total-n) / float64(total); f > missing {
				worst, missing = p, f
			}
		}
	}
	return worst
}
