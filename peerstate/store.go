package peerstate

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/shard"
)

// Config is the generation and rank a Store belongs to, and what the
// replica's AdamW update needs.
type Config struct {
	Job        string
	Generation uint64
	Rank       int
	Layout     shard.Layout // the generation's ranges; World is its size
	Optim      mod.OptimConfig
	Decay      [][2]int // (*mod.Layout).DecaySpans, full-vector coordinates
	TotalSteps int64    // for the learning-rate schedule
}

// Part names one of the three vectors a range has.
type Part uint8

// The parts of a range.
const (
	Params Part = iota
	AdamM
	AdamV
)

func (p Part) String() string {
	switch p {
	case Params:
		return "params"
	case AdamM:
		return "adam_m"
	case AdamV:
		return "adam_v"
	}
	return fmt.Sprintf("part(%d)", uint8(p))
}

// version is one range's parameters and moments after step; step < 0
// means the version holds nothing.
type version struct {
	step    int64
	p, m, v []float32
}

func (v *version) part(p Part) []float32 {
	switch p {
	case Params:
		return v.p
	case AdamM:
		return v.m
	}
	return v.v
}

// slot is one range at its two newest steps.
type slot struct {
	rank, lo, hi int
	cur, prev    version
}

func newSlot(l shard.Layout, rank int) slot {
	lo, hi := l.Range(rank)
	n := hi - lo
	mk := func() version {
		return version{step: -1, p: make([]float32, n), m: make([]float32, n), v: make([]float32, n)}
	}
	return slot{rank: rank, lo: lo, hi: hi, cur: mk(), prev: mk()}
}

// rotate makes the current version the previous one; the old previous
// version's buffers become the current one, to be overwritten.
func (s *slot) rotate() {
	s.cur, s.prev = s.prev, s.cur
	s.cur.step = -1
}

func (s *slot) steps() []int64 {
	var out []int64
	for _, v := range []*version{&s.prev, &s.cur} {
		if v.step >= 0 {
			out = append(out, v.step)
		}
	}
	return out
}

func (s *slot) at(step int64) *version {
	switch {
	case step < 0:
		return nil
	case s.cur.step == step:
		return &s.cur
	case s.prev.step == step:
		return &s.prev
	}
	return nil
}

// Store is one rank's in-memory state: its own range, and its left
// neighbour's (none with one rank). Safe for concurrent use: the training
// goroutine records steps while a server may read a frozen store.
type Store struct {
	cfg Config
	mu  sync.RWMutex
	own slot
	nb  *slot
}

// New allocates a store for cfg's rank; it holds nothing until Init.
func New(cfg Config) (*Store, error) {
	l := cfg.Layout
	if l.World < 1 || cfg.Rank < 0 || cfg.Rank >= l.World {
		return nil, fmt.Errorf("peer state: rank %d of world %d", cfg.Rank, l.World)
	}
	if cfg.TotalSteps < 1 {
		return nil, fmt.Errorf("peer state: %d total steps", cfg.TotalSteps)
	}
	s := &Store{cfg: cfg, own: newSlot(l, cfg.Rank)}
	if l.World > 1 {
		nb := newSlot(l, (cfg.Rank-1+l.World)%l.World)
		s.nb = &nb
	}
	return s, nil
}

// Config is what the store was made with.
func (s *Store) Config() Config { return s.cfg }

// NeighbourRange is the range of the left neighbour whose replica the
// store keeps; ok is false with one rank.
func (s *Store) NeighbourRange() (rank, lo, hi int, ok bool) {
	if s.nb == nil {
		return 0, 0, 0, false
	}
	return s.nb.rank, s.nb.lo, s.nb.hi, true
}

// Init sets both ranges at step, as the generation starts: params is the
// full vector, m and v the rank's own moments, nbM and nbV the left
// neighbour's (nil: zero, a fresh start).
func (s *Store) Init(step int64, params, m, v, nbM, nbV []float32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(params) != s.cfg.Layout.Total {
		return fmt.Errorf("peer state init: %d parameters, the layout has %d", len(params), s.cfg.Layout.Total)
	}
	if err := s.own.set(step, params, m, v); err != nil {
		return fmt.Errorf("peer state init of rank %d: %w", s.own.rank, err)
	}
	s.own.prev.step = -1
	if s.nb != nil {
		if nbM == nil && nbV == nil {
			nbM, nbV = make([]float32, s.nb.hi-s.nb.lo), make([]float32, s.nb.hi-s.nb.lo)
		}
		if err := s.nb.set(step, params, nbM, nbV); err != nil {
			return fmt.Errorf("peer state init of neighbour %d: %w", s.nb.rank, err)
		}
		s.nb.prev.step = -1
	}
	return nil
}

// set copies the range's parameters (from the full vector) and moments
// into a fresh current version at step.
func (s *slot) set(step int64, params, m, v []float32) error {
	if len(m) != s.hi-s.lo || len(v) != s.hi-s.lo {
		return fmt.Errorf("moments of %d and %d elements for a range of %d", len(m), len(v), s.hi-s.lo)
	}
	s.rotate()
	copy(s.cur.p, params[s.lo:s.hi])
	copy(s.cur.m, m)
	copy(s.cur.v, v)
	s.cur.step = step
	return nil
}

// RecordOwn keeps the rank's own range after it completed step: params
// is the full vector, m and v its moments.
func (s *Store) RecordOwn(step int64, params, m, v []float32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(params) != s.cfg.Layout.Total {
		return fmt.Errorf("peer state: %d parameters, the layout has %d", len(params), s.cfg.Layout.Total)
	}
	if c := s.own.cur.step; c >= 0 && step != c+1 {
		return fmt.Errorf("peer state: own range at step %d cannot record step %d", c, step)
	}
	return s.own.set(step, params, m, v)
}

// AdvanceNeighbour replays step on the replica of the left neighbour's
// range: grad is that range's reduced gradient (what the neighbour's
// AdamW used), sumSquares the step's global squared gradient norm. The
// replica's new parameters must equal params (the full vector after the
// all-gather) bit for bit: the replay is the owner's arithmetic.
func (s *Store) AdvanceNeighbour(step int64, grad []float32, sumSquares float64, params []float32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	nb := s.nb
	switch {
	case nb == nil:
		return fmt.Errorf("peer state: one rank has no neighbour")
	case len(grad) != nb.hi-nb.lo:
		return fmt.Errorf("peer state: gradient of %d elements for neighbour range [%d,%d)", len(grad), nb.lo, nb.hi)
	case len(params) != s.cfg.Layout.Total:
		return fmt.Errorf("peer state: %d parameters, the layout has %d", len(params), s.cfg.Layout.Total)
	case nb.cur.step < 0 || step != nb.cur.step+1:
		return fmt.Errorf("peer state: replica of rank %d at step %d cannot take the update of step %d", nb.rank, nb.cur.step, step)
	}
	from := nb.cur
	nb.rotate()
	copy(nb.cur.p, from.p)
	copy(nb.cur.m, from.m)
	copy(nb.cur.v, from.v)
	o := s.cfg.Optim
	lr := o.LRAt(int(step-1), int(s.cfg.TotalSteps))
	o.AdamWStep(nb.cur.p, grad, nb.cur.m, nb.cur.v, nb.lo, nb.hi, s.cfg.Decay, int(step), lr, o.ClipScale(sumSquares))
	nb.cur.step = step
	for i, p := range nb.cur.p {
		if math.Float32bits(p) != math.Float32bits(params[nb.lo+i]) {
			nb.cur.step = -1 // not a state anyone may resume from
			return fmt.Errorf("peer state: replica of rank %d diverged at step %d, element %d: %v, the all-gather gave %v", nb.rank, step, nb.lo+i, p, params[nb.lo+i])
		}
	}
	return nil
}

// Held is one range the store holds and the steps it holds it at.
type Held struct {
	Rank  int
	Steps []int64
}

// Holdings lists the ranges held, own first, and their steps, oldest first.
func (s *Store) Holdings() []Held {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []Held
	for _, sl := range []*slot{&s.own, s.nb} {
		if sl == nil {
			continue
		}
		if st := sl.steps(); len(st) > 0 {
			out = append(out, Held{Rank: sl.rank, Steps: slices.Clone(st)})
		}
	}
	return out
}

// Read copies elements [lo, hi) (full-vector coordinates) of part of the
// range of rank q at step into dst.
func (s *Store) Read(q int, step int64, part Part, lo, hi int, dst []float32) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var sl *slot
	switch {
	case q == s.own.rank:
		sl = &s.own
	case s.nb != nil && q == s.nb.rank:
		sl = s.nb
	default:
		return fmt.Errorf("rank %d's store holds no range %d", s.cfg.Rank, q)
	}
	v := sl.at(step)
	switch {
	case v == nil:
		return fmt.Errorf("range %d is not held at step %d (held at %v)", q, step, sl.steps())
	case part > AdamV:
		return fmt.Errorf("unknown %s", part)
	case lo < sl.lo || hi > sl.hi || lo > hi:
		return fmt.Errorf("[%d,%d) is outside range %d's [%d,%d)", lo, hi, q, sl.lo, sl.hi)
	case len(dst) != hi-lo:
		return fmt.Errorf("%d destination elements for [%d,%d)", len(dst), lo, hi)
	}
	copy(dst, v.part(part)[lo-sl.lo:hi-sl.lo])
	return nil
}
