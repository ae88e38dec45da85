package allreduce

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// collective is one kind of collective's protocol; run drives it.
type collective interface {
	// accepts says whether data messages of phase p belong to it.
	accepts(p phase) bool
	// ready says whether every rank this collective sends data to is
	// known to listen (has been heard from). Until then data messages are
	// kept back, since applying one may send.
	ready() bool
	// pump sends what the collective can send unprompted (its own data,
	// as far as the pipeline window allows). Called only once ready.
	pump() error
	// deliver applies a data message of this collective whose header
	// parsed and matched seq, phase and step. It returns an error wrapping
	// errInvalid or errDuplicate for a message to drop.
	deliver(h header, msg []byte) error
	finished() bool
}

// waiter is implemented by collectives that can tell which peer they are
// still waiting for data from; deadlineError uses it.
type waiter interface {
	waitingFor() int // a rank, or -1
}

var (
	errInvalid   = errors.New("invalid message")
	errDuplicate = errors.New("duplicate message")
)

// current is the collective run is driving.
type current struct {
	op    string
	step  uint64
	seq   uint64
	start time.Time
	c     collective
}

// run drives one collective to completion, failure or deadline. It is the
// only code touching the Ring's state, under r.mu.
func (r *Ring) run(ctx context.Context, op string, step uint64, c collective) (err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.isClosed() {
		return fmt.Errorf("%s step %d: %w", op, step, ErrClosed)
	}
	if r.failed != nil {
		return fmt.Errorf("%s step %d: ring failed earlier: %w", op, step, r.failed)
	}
	r.seq++
	cur := &current{op: op, step: step, seq: r.seq, start: time.Now(), c: c}
	r.active = cur
	defer func() {
		if m := r.cfg.Metrics; m != nil {
			m.Seconds.WithLabelValues(op).Observe(time.Since(cur.start).Seconds())
		}
		if err != nil {
			r.failed = err
			r.abort(cur, err)
		}
	}()
	if r.cfg.World == 1 {
		return nil
	}

	deadline := time.NewTimer(r.cfg.Deadline)
	defer deadline.Stop()
	beat := time.NewTicker(r.beatEvery)
	defer beat.Stop()
	// Until every peer has been heard from (so is known to be subscribed)
	// say hello often: the first collective waits on it.
	var helloC <-chan time.Time
	if !r.allHeard() {
		hello := time.NewTicker(min(r.beatEvery, 5*time.Millisecond))
		defer hello.Stop()
		helloC = hello.C
		if err := r.sendBeats(cur, flagHello); err != nil {
			return err
		}
	}

	r.deferred = r.deferred[:0]
	early := r.early
	r.early = nil
	for _, msg := range early {
		if err := r.dispatch(cur, msg); err != nil {
			return err
		}
	}
	for {
		if c.ready() {
			for len(r.deferred) > 0 {
				msg := r.deferred[0]
				r.deferred = r.deferred[1:]
				if err := r.dispatch(cur, msg); err != nil {
					return err
				}
			}
			if err := c.pump(); err != nil {
				return fmt.Errorf("%s step %d: %w", op, step, err)
			}
		}
		if c.finished() {
			// Best effort: a peer that misses this only loses the
			// ability to tell "finished" from "silent" if it is stuck.
			r.sendBeats(cur, flagDone)
			return nil
		}
		select {
		case msg := <-r.inbox:
			if err := r.dispatch(cur, msg); err != nil {
				return err
			}
		case <-helloC:
			if r.allHeard() {
				helloC = nil
			} else if err := r.sendBeats(cur, flagHello); err != nil {
				return err
			}
		case now := <-beat.C:
			if err := r.sendBeats(cur, 0); err != nil {
				return err
			}
			if p, quiet := r.silentPeer(cur, now, r.silentAfter); p >= 0 {
				return &PeerError{Op: op, Step: step, Rank: p,
					Err: fmt.Errorf("%w: nothing heard for %v", ErrSilent, quiet.Round(time.Millisecond))}
			}
		case now := <-deadline.C:
			return r.deadlineError(cur, now)
		case <-ctx.Done():
			return fmt.Errorf("%s step %d: %w", op, step, ctx.Err())
		case <-r.done:
			return fmt.Errorf("%s step %d: %w", op, step, ErrClosed)
		}
	}
}

// dispatch validates a received message against the running collective
// and applies, keeps, or drops it. It returns an error only when the
// collective must fail.
func (r *Ring) dispatch(cur *current, msg []byte) error {
	r.stats.receivedBytes.Add(uint64(len(msg)))
	if m := r.cfg.Metrics; m != nil {
		m.Bytes.WithLabelValues("received").Add(float64(len(msg)))
	}
	h, err := parseHeader(msg)
	if err != nil {
		r.drop("invalid")
		return nil
	}
	if h.job != r.job || h.gen != r.cfg.Generation {
		r.drop("stale")
		return nil
	}
	from := int(h.from)
	if from >= r.cfg.World || from == r.cfg.Rank {
		r.drop("invalid")
		return nil
	}
	p := &r.peers[from]
	p.heard = true
	p.lastHeard = time.Now()
	p.seq = max(p.seq, h.seq)

	switch {
	case h.phase == phaseHeartbeat:
		if h.count != 0 {
			r.drop("invalid")
			return nil
		}
		if h.chunk&flagDone != 0 {
			p.done = max(p.done, h.seq)
		}
		if h.chunk&flagHello != 0 {
			return r.sendBeat(cur, from, 0)
		}
		return nil
	case h.seq < cur.seq:
		r.drop("stale")
		return nil
	case h.seq > cur.seq:
		// A neighbour already in a later collective. What it can send
		// ahead is bounded by the window, so more than this is a bug or
		// an impostor.
		if len(r.early) >= cap(r.inbox) {
			return &PeerError{Op: cur.op, Step: cur.step, Rank: from,
				Err: fmt.Errorf("%w: more than %d messages for later collectives", ErrMismatch, cap(r.inbox))}
		}
		r.early = append(r.early, msg)
		return nil
	case h.phase == phaseAbort:
		suspect := from
		if h.chunk != noSuspect && int(h.chunk) < r.cfg.World {
			suspect = int(h.chunk)
		}
		return &PeerError{Op: cur.op, Step: cur.step, Rank: suspect,
			Err: fmt.Errorf("%w by rank %d: %q", ErrAborted, from, msg[headerSize:min(len(msg), headerSize+maxAbortReason)])}
	case !cur.c.accepts(h.phase) || h.step != cur.step:
		return &PeerError{Op: cur.op, Step: cur.step, Rank: from,
			Err: fmt.Errorf("%w: it sent %s of step %d as collective %d, this rank runs %s of step %d",
				ErrMismatch, h.phase, h.step, h.seq, r.describe(cur), cur.step)}
	case !cur.c.ready():
		r.deferred = append(r.deferred, msg)
		return nil
	}
	err = cur.c.deliver(h, msg)
	switch {
	case errors.Is(err, errInvalid):
		r.drop("invalid")
		return nil
	case errors.Is(err, errDuplicate):
		r.drop("duplicate")
		return nil
	case err != nil:
		return fmt.Errorf("%s step %d chunk %d hop %d from rank %d: %w", cur.op, cur.step, h.chunk, h.hop, from, err)
	}
	return nil
}

// describe names cur's collective, with the all-gather's algorithm, for
// errors about what a peer sent.
func (r *Ring) describe(cur *current) string {
	if _, ok := cur.c.(*gatherPass); ok {
		return cur.op + " (fan-out)"
	}
	if rp, ok := cur.c.(*ringPass); ok && rp.phase == phaseAllGather {
		return cur.op + " (ring)"
	}
	return cur.op
}

func (r *Ring) drop(reason string) {
	switch reason {
	case "stale":
		r.stats.stale.Add(1)
	case "invalid":
		r.stats.invalid.Add(1)
	case "duplicate":
		r.stats.duplicate.Add(1)
	}
	if m := r.cfg.Metrics; m != nil {
		m.Dropped.WithLabelValues(reason).Inc()
	}
}

func (r *Ring) allHeard() bool {
	for i, p := range r.peers {
		if i != r.cfg.Rank && !p.heard {
			return false
		}
	}
	return true
}

// silentPeer is the peer, not yet done with cur, heard from least
// recently (counting from the collective's start), if that is longer ago
// than limit; -1 otherwise.
func (r *Ring) silentPeer(cur *current, now time.Time, limit time.Duration) (int, time.Duration) {
	worst, quiet := -1, limit
	for i, p := range r.peers {
		if i == r.cfg.Rank || p.done >= cur.seq {
			continue
		}
		since := cur.start
		if p.lastHeard.After(since) {
			since = p.lastHeard
		}
		if d := now.Sub(since); d > quiet {
			worst, quiet = i, d
		}
	}
	return worst, quiet
}

// deadlineError names the most likely culprit when time is up: a peer
// quiet for two heartbeat periods, else a peer still in an earlier
// collective, else the peer whose data this rank waits for (the left
// neighbour in a ring pass).
func (r *Ring) deadlineError(cur *current, now time.Time) error {
	e := &PeerError{Op: cur.op, Step: cur.step, Rank: r.left}
	if p, quiet := r.silentPeer(cur, now, 2*r.beatEvery); p >= 0 {
		e.Rank = p
		e.Err = fmt.Errorf("%w: deadline %v passed, nothing heard for %v", ErrSilent, r.cfg.Deadline, quiet.Round(time.Millisecond))
		return e
	}
	for i, p := range r.peers {
		if i != r.cfg.Rank && p.seq < cur.seq && p.done < cur.seq {
			e.Rank = i
			e.Err = fmt.Errorf("%w: deadline %v passed with the peer still in collective %d, this rank in %d",
				ErrSilent, r.cfg.Deadline, p.seq, cur.seq)
			return e
		}
	}
	if w, ok := cur.c.(waiter); ok {
		if p := w.waitingFor(); p >= 0 {
			e.Rank = p
			e.Err = fmt.Errorf("%w: deadline %v passed waiting for data from rank %d", ErrSilent, r.cfg.Deadline, p)
			return e
		}
	}
	e.Err = fmt.Errorf("%w: deadline %v passed waiting for data from the left neighbour", ErrSilent, r.cfg.Deadline)
	return e
}

// sendBeats sends a heartbeat to every peer (with flagHello: to every
// peer not yet heard from).
func (r *Ring) sendBeats(cur *current, flags uint32) error {
	for i := range r.peers {
		if i == r.cfg.Rank || (flags&flagHello != 0 && r.peers[i].heard) {
			continue
		}
		if err := r.sendBeat(cur, i, flags); err != nil {
			return err
		}
	}
	return nil
}

func (r *Ring) sendBeat(cur *current, to int, flags uint32) error {
	h := r.header(cur, phaseHeartbeat)
	h.chunk = flags
	msg := r.ctrlBuf[:headerSize]
	h.put(msg)
	return r.send(cur, to, msg)
}

// abort tells every peer this rank gave up on cur, naming the suspect
// when the failure was a PeerError, so they fail now rather than at their
// deadline.
func (r *Ring) abort(cur *current, cause error) {
	if r.cfg.World == 1 || r.isClosed() {
		return
	}
	h := r.header(cur, phaseAbort)
	h.chunk = noSuspect
	var pe *PeerError
	if errors.As(cause, &pe) {
		if errors.Is(cause, ErrAborted) {
			return // the aborting peer told everyone already
		}
		h.chunk = uint32(pe.Rank)
	}
	reason := cause.Error()
	// Cut to what the transport carries too: an abort it refuses is lost.
	if limit := min(maxAbortReason, r.t.MaxMessage()-headerSize); len(reason) > limit {
		reason = reason[:limit]
	}
	h.count = uint32(len(reason))
	msg := r.ctrlBuf[:headerSize+len(reason)]
	h.put(msg)
	copy(msg[headerSize:], reason)
	for i := range r.peers {
		if i != r.cfg.Rank {
			r.send(cur, i, msg) // best effort: the deadline covers a lost abort
		}
	}
}

func (r *Ring) header(cur *current, p phase) header {
	return header{phase: p, from: uint16(r.cfg.Rank), job: r.job, gen: r.cfg.Generation, seq: cur.seq, step: cur.step}
}

// broadcast is send's rank for the fan-out subject.
const broadcast = -1

// sendData sends a data message made of h and buf[lo:hi], the rank's own
// floats, to rank to's inbox or (to == broadcast) the fan-out subject.
//
// When buf is already in wire order, the message is built in place: the
// headerSize bytes of buf just before lo are saved, overwritten with the
// header, sent, and restored. The transport is done with a message when
// Send returns, and nothing else touches buf during a collective (receipts
// are applied on this goroutine too), so nobody sees the header there.
// That saves copying every own chunk into sendBuf first.
func (r *Ring) sendData(cur *current, to int, h header, buf []float32, lo, hi int) error {
	const headerFloats = headerSize / 4
	if !littleEndian || lo < headerFloats {
		msg := r.sendBuf[:headerSize+4*(hi-lo)]
		h.put(msg)
		putF32(msg[headerSize:], buf[lo:hi])
		return r.send(cur, to, msg)
	}
	msg := nativeBytes(buf[lo-headerFloats : hi])
	var saved [headerSize]byte
	copy(saved[:], msg)
	h.put(msg)
	err := r.send(cur, to, msg)
	copy(msg, saved[:])
	return err
}

// send sends msg to rank to's inbox, or (to == broadcast) to the fan-out
// subject.
func (r *Ring) send(cur *current, to int, msg []byte) error {
	subject := r.gatherSubj
	if to != broadcast {
		subject = r.inboxes[to]
	}
	if err := r.t.Send(subject, msg); err != nil {
		if to == broadcast {
			return fmt.Errorf("%s step %d: publish to all ranks: %w", cur.op, cur.step, err)
		}
		return fmt.Errorf("%s step %d: send to rank %d: %w", cur.op, cur.step, to, err)
	}
	r.stats.sentBytes.Add(uint64(len(msg)))
	if m := r.cfg.Metrics; m != nil {
		m.Bytes.WithLabelValues("sent").Add(float64(len(msg)))
	}
	return nil
}
