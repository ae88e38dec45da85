package allreduce

import "fmt"

// scalarPass sums a few float64s in rank order. The partial sum travels
// 0 -> 1 -> ... -> World-1, each rank adding its values as the right
// operand, ((v0 + v1) + v2) + ...; rank World-1 then sends the total on
// around the ring (World-1 -> 0 -> ... -> World-2) so every rank ends with
// the same bits. 2(World-1) sequential hops: latency-bound, which is fine
// for the handful of values (loss, squared gradient norm) it carries.
type scalarPass struct {
	r         *Ring
	vals      []float64
	sentFirst bool
	gotReduce bool
	gotTotal  bool
}

func (r *Ring) newScalarPass(vals []float64) *scalarPass {
	return &scalarPass{r: r, vals: vals}
}

func (sp *scalarPass) accepts(p phase) bool {
	return p == phaseScalarReduce || p == phaseScalarBroadcast
}

func (sp *scalarPass) ready() bool { return sp.r.peers[sp.r.right].heard }

func (sp *scalarPass) isFirst() bool { return sp.r.cfg.Rank == 0 }
func (sp *scalarPass) isLast() bool  { return sp.r.cfg.Rank == sp.r.cfg.World-1 }

func (sp *scalarPass) finished() bool {
	switch {
	case sp.isFirst():
		return sp.sentFirst && sp.gotTotal
	case sp.isLast():
		return sp.gotReduce
	}
	return sp.gotReduce && sp.gotTotal
}

func (sp *scalarPass) pump() error {
	if sp.isFirst() && !sp.sentFirst {
		if err := sp.send(phaseScalarReduce); err != nil {
			return err
		}
		sp.sentFirst = true
	}
	return nil
}

func (sp *scalarPass) send(p phase) error {
	r := sp.r
	msg := r.sendBuf[:headerSize+8*len(sp.vals)]
	h := r.header(r.cur(), p)
	h.count = uint32(len(sp.vals))
	h.put(msg)
	putF64(msg[headerSize:], sp.vals)
	return r.send(r.cur(), r.right, msg)
}

func (sp *scalarPass) deliver(h header, msg []byte) error {
	r := sp.r
	if int(h.from) != r.left || h.hop != 0 || h.chunk != 0 {
		return fmt.Errorf("%w: scalars from rank %d hop %d chunk %d", errInvalid, h.from, h.hop, h.chunk)
	}
	if int(h.count) != len(sp.vals) {
		return fmt.Errorf("%w: %d scalars, this rank has %d", errInvalid, h.count, len(sp.vals))
	}
	payload := msg[headerSize:]
	switch h.phase {
	case phaseScalarReduce:
		if sp.isFirst() {
			return fmt.Errorf("%w: partial sum sent to rank 0", errInvalid)
		}
		if sp.gotReduce {
			return fmt.Errorf("%w: second partial sum", errDuplicate)
		}
		sp.gotReduce = true
		partial := make([]float64, len(sp.vals))
		getF64(partial, payload)
		for i := range sp.vals {
			sp.vals[i] = partial[i] + sp.vals[i]
		}
		if sp.isLast() {
			return sp.send(phaseScalarBroadcast)
		}
		return sp.send(phaseScalarReduce)
	default: // phaseScalarBroadcast
		if sp.isLast() {
			return fmt.Errorf("%w: total sent back to rank %d", errInvalid, r.cfg.Rank)
		}
		if !sp.isFirst() && !sp.gotReduce {
			// The left neighbour sends its partial sum before the total,
			// and transports keep one sender's order.
			return fmt.Errorf("%w: total before the partial sum", errInvalid)
		}
		if sp.gotTotal {
			return fmt.Errorf("%w: second total", errDuplicate)
		}
		sp.gotTotal = true
		getF64(sp.vals, payload)
		if r.right != r.cfg.World-1 {
			return sp.send(phaseScalarBroadcast)
		}
		return nil
	}
}
