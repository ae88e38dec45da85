package allreduce

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modcoord/modcoord/shard"
)

// This file is the ring collective, top to bottom: the Ring and its
// collectives (ReduceScatter, AllGather, AllReduceScalars), then run, the
// driver every collective goes through, then the three protocols it
// drives: ringPass (the reduce-scatter, and the ring all-gather),
// gatherPass (the fan-out all-gather) and scalarPass. The message format
// is in wire.go, the transports in transport.go, nats_transport.go and
// mem_transport.go.

// Defaults for Config fields left zero.
const (
	DefaultDeadline = 30 * time.Second
	// DefaultWindow is the pipeline depth: how many chunks a rank may have
	// sent beyond those it has received. See docs/allreduce.md for why.
	DefaultWindow = 4
	// DefaultChunkBytes caps a chunk's payload when the transport allows
	// more. A whole message (payload and 48-byte header) stays within
	// 32 KiB, nats.go's read buffer, so that it is a small allocation in
	// the client and fits the server's 64 KiB read buffer: larger
	// messages cost more copying and zeroing than their fewer per-message
	// costs save (measurements in docs/allreduce.md). A multiple of 64
	// bytes, so of shard.Align floats.
	DefaultChunkBytes = 32<<10 - 64
	// DefaultGather is the all-gather algorithm of a Config that names
	// none.
	DefaultGather = GatherFanout
)

// GatherMode says how AllGather (and so AllReduce's second half) moves
// the owners' ranges. Every rank of a ring must use the same mode: a rank
// receiving the other mode's messages fails the collective with
// ErrMismatch.
type GatherMode int

const (
	// GatherDefault (the zero value) means DefaultGather.
	GatherDefault GatherMode = iota
	// GatherFanout publishes each chunk of a rank's own range once to the
	// generation's broadcast subject (GatherSubject), which every rank
	// subscribes to: one publish per chunk instead of World-1 forwards,
	// and one hop instead of World-1.
	GatherFanout
	// GatherRing passes the ranges around the ring, World-1 hops, like
	// the reduce-scatter.
	GatherRing
)

func (g GatherMode) String() string {
	switch g {
	case GatherDefault:
		return "default"
	case GatherFanout:
		return "fanout"
	case GatherRing:
		return "ring"
	}
	return fmt.Sprintf("GatherMode(%d)", int(g))
}

// Config identifies one rank of one ring and tunes it.
type Config struct {
	// Job names the training job; it scopes subjects, so it must be a
	// valid NATS subject token: letters, digits, '-' and '_'.
	Job string
	// Generation changes whenever the set of workers changes; messages of
	// other generations are dropped.
	Generation uint64
	Rank       int
	World      int
	// Deadline bounds every collective. A peer not heard from for half of
	// it is declared silent. Zero means DefaultDeadline.
	Deadline time.Duration
	// ChunkBytes caps each message's payload; the transport's
	// MaxMessage caps it further. Zero means DefaultChunkBytes.
	ChunkBytes int
	// Window is the pipeline depth; zero means DefaultWindow.
	Window int
	// Gather picks the all-gather algorithm; zero means DefaultGather.
	Gather GatherMode
	// Metrics, when set, receives durations, bytes and drops.
	Metrics *Metrics
}

var jobToken = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Ring runs collectives for one rank. Collectives on a Ring run one at a
// time (they are serialised), and every rank must call the same
// collectives in the same order with the same steps and lengths. After a
// collective fails the Ring stays failed: peers may be anywhere in the
// protocol, so the job must move to a new generation.
type Ring struct {
	t           Transport
	cfg         Config
	job         uint64
	inboxes     []string
	gatherSubj  string // broadcast subject, fan-out all-gather only
	left, right int
	chunkFloats int
	beatEvery   time.Duration
	silentAfter time.Duration

	stopListen func() error
	stopGather func() error
	inbox      chan []byte
	done       chan struct{}
	closeOnce  sync.Once
	closeErr   error

	stats stats

	mu       sync.Mutex // held for a whole collective; guards the rest
	seq      uint64
	active   *current // the collective run is driving
	failed   error
	peers    []peerState
	early    [][]byte // messages of later collectives
	deferred [][]byte // data that arrived before the right neighbour was known to listen
	sendBuf  []byte
	ctrlBuf  []byte
}

// peerState is what a rank knows of another.
type peerState struct {
	heard     bool // ever: proves it subscribed, so we may send to it
	lastHeard time.Time
	seq       uint64 // newest collective it has sent anything for
	done      uint64 // newest collective it said it finished
}

type stats struct {
	stale, invalid, duplicate atomic.Uint64
	sentBytes, receivedBytes  atomic.Uint64
}

// Stats counts a Ring's messages since it was made.
type Stats struct {
	Stale, Invalid, Duplicate uint64 // dropped on receipt
	SentBytes, ReceivedBytes  uint64
}

// NewRing subscribes rank's inbox and returns its Ring. Peers need not
// exist yet: the first collective waits (within its deadline) until its
// neighbours have announced themselves.
func NewRing(t Transport, cfg Config) (*Ring, error) {
	if !jobToken.MatchString(cfg.Job) {
		return nil, fmt.Errorf("new ring: job id %q must be 1-128 letters, digits, '-' or '_'", cfg.Job)
	}
	if cfg.World < 1 || cfg.World > 1<<16-1 {
		return nil, fmt.Errorf("new ring: world %d outside [1, 65535]", cfg.World)
	}
	if cfg.Rank < 0 || cfg.Rank >= cfg.World {
		return nil, fmt.Errorf("new ring: rank %d outside world %d", cfg.Rank, cfg.World)
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = DefaultDeadline
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Gather == GatherDefault {
		cfg.Gather = DefaultGather
	}
	if cfg.Gather != GatherFanout && cfg.Gather != GatherRing {
		return nil, fmt.Errorf("new ring: unknown all-gather mode %v", cfg.Gather)
	}
	payload := min(cfg.ChunkBytes, t.MaxMessage()-headerSize)
	chunkFloats := payload / 4 / shard.Align * shard.Align
	if chunkFloats < shard.Align {
		return nil, fmt.Errorf("new ring: messages of %d bytes leave no room for a chunk of %d floats after the %d-byte header",
			t.MaxMessage(), shard.Align, headerSize)
	}
	r := &Ring{
		t:           t,
		cfg:         cfg,
		job:         jobHash(cfg.Job),
		left:        (cfg.Rank + cfg.World - 1) % cfg.World,
		right:       (cfg.Rank + 1) % cfg.World,
		chunkFloats: chunkFloats,
		beatEvery:   cfg.Deadline / 10,
		silentAfter: cfg.Deadline / 2,
		// Enough for everything peers can legally send ahead (the window
		// arguments in docs/allreduce.md) plus heartbeats, so the
		// transport's delivery goroutines rarely wait on us.
		inbox:   make(chan []byte, 4*cfg.World*cfg.Window+4*cfg.World+16),
		done:    make(chan struct{}),
		peers:   make([]peerState, cfg.World),
		sendBuf: make([]byte, headerSize+4*chunkFloats),
		ctrlBuf: make([]byte, headerSize+maxAbortReason),
	}
	for i := range cfg.World {
		r.inboxes = append(r.inboxes, InboxSubject(cfg.Job, cfg.Generation, i))
	}
	stop, err := t.Listen(r.inboxes[cfg.Rank], r.receive)
	if err != nil {
		return nil, fmt.Errorf("new ring rank %d: %w", cfg.Rank, err)
	}
	r.stopListen = stop
	r.stopGather = func() error { return nil }
	// Both subscriptions are in place (Listen returns once they are)
	// before this rank sends anything, so a peer that hears from it may
	// publish to either.
	if cfg.Gather == GatherFanout && cfg.World > 1 {
		r.gatherSubj = GatherSubject(cfg.Job, cfg.Generation)
		stopGather, err := t.Listen(r.gatherSubj, r.receiveGather)
		if err != nil {
			// Release a handler blocked handing a message to the inbox
			// nobody will read, so that stop can wait for it.
			close(r.done)
			stop()
			return nil, fmt.Errorf("new ring rank %d: %w", cfg.Rank, err)
		}
		r.stopGather = stopGather
	}
	return r, nil
}

// receive runs on the transport's delivery goroutine. It only hands the
// message over: all state belongs to the collective's goroutine.
func (r *Ring) receive(msg []byte) {
	select {
	case r.inbox <- msg:
	case <-r.done:
	}
}

// receiveGather is receive for the broadcast subject. It discards this
// rank's own broadcasts, which a transport may echo back (MemTransport,
// or a NATS connection the caller made without NoEcho), before they cost
// the collective anything.
func (r *Ring) receiveGather(msg []byte) {
	if from, ok := senderOf(msg); ok && from == r.cfg.Rank {
		return
	}
	r.receive(msg)
}

// Close stops listening. A collective running concurrently fails with
// ErrClosed. Close does not close the transport.
func (r *Ring) Close() error {
	r.closeOnce.Do(func() {
		close(r.done)
		r.closeErr = errors.Join(r.stopListen(), r.stopGather())
	})
	return r.closeErr
}

// Layout is how a vector of n floats is cut among the ring's ranks: rank
// r's reduce-scatter result is Layout(n).Range(r).
func (r *Ring) Layout(n int) shard.Layout {
	return shard.Layout{Total: n, World: r.cfg.World}
}

// ChunkFloats is the number of float32s per message.
func (r *Ring) ChunkFloats() int { return r.chunkFloats }

// Window is the pipeline depth in use.
func (r *Ring) Window() int { return r.cfg.Window }

// Gather is the all-gather algorithm in use.
func (r *Ring) Gather() GatherMode { return r.cfg.Gather }

// MaxMessage is the largest message the ring's transport carries.
func (r *Ring) MaxMessage() int { return r.t.MaxMessage() }

// MessageBytes is what one message of chunkBytes payload takes on the
// bus, header included; a server's pending limit is sized from it.
func MessageBytes(chunkBytes int) int { return headerSize + chunkBytes }

// Stats returns the message counters.
func (r *Ring) Stats() Stats {
	return Stats{
		Stale: r.stats.stale.Load(), Invalid: r.stats.invalid.Load(), Duplicate: r.stats.duplicate.Load(),
		SentBytes: r.stats.sentBytes.Load(), ReceivedBytes: r.stats.receivedBytes.Load(),
	}
}

// ReduceScatter sums buf over all ranks into this rank's range,
// buf[Layout(len(buf)).Range(rank)]. The rest of buf is used as scratch
// and left undefined. Every rank must pass a buf of the same length.
func (r *Ring) ReduceScatter(ctx context.Context, step uint64, buf []float32) error {
	return r.run(ctx, "reduce-scatter", step, r.newRingPass(phaseReduceScatter, buf))
}

// AllGather copies every rank's range of buf to all ranks: afterwards buf
// on every rank equals the concatenation of the owners' ranges.
func (r *Ring) AllGather(ctx context.Context, step uint64, buf []float32) error {
	if r.cfg.Gather == GatherFanout {
		return r.run(ctx, "all-gather", step, r.newGatherPass(buf))
	}
	return r.run(ctx, "all-gather", step, r.newRingPass(phaseAllGather, buf))
}

// AllReduce sums buf over all ranks, leaving the sum in every rank's buf.
func (r *Ring) AllReduce(ctx context.Context, step uint64, buf []float32) error {
	if err := r.ReduceScatter(ctx, step, buf); err != nil {
		return err
	}
	return r.AllGather(ctx, step, buf)
}

// AllReduceScalars replaces vals on every rank with the sum over ranks,
// added in float64 in rank order: ((v0 + v1) + v2) + ... Every rank must
// pass the same number of values.
func (r *Ring) AllReduceScalars(ctx context.Context, step uint64, vals []float64) error {
	if limit := 4 * r.chunkFloats / 8; len(vals) > limit {
		return fmt.Errorf("scalar all-reduce of %d values: at most %d fit a message", len(vals), limit)
	}
	return r.run(ctx, "scalars", step, r.newScalarPass(vals))
}

// cur is the collective being driven; only valid inside run.
func (r *Ring) cur() *current { return r.active }

// isClosed reports whether Close was called.
func (r *Ring) isClosed() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// Driving a collective. A collective is a protocol (the passes below);
// run drives it on the caller's goroutine, and is the only code that
// touches the Ring's state.

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
