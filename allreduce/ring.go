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
