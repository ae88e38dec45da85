package shard

import "fmt"

// Align is the granularity of range boundaries, in float32 elements.
// 16 floats are 64 bytes, one cache line on amd64 and arm64: no two ranks'
// ranges share a line (no false sharing when workers run as goroutines of
// one process), every range starts on a SIMD-friendly boundary, and ring
// chunks cut at multiples of Align stay aligned too.
const Align = 16

// Layout cuts a flat vector of Total floats into World contiguous ranges
// in rank order. Every boundary except the end is a multiple of Align.
// Ranges differ by at most one Align block (plus the short tail of the
// last block), except that when there are fewer blocks than ranks the
// last ranks get empty ranges.
type Layout struct {
	Total int
	World int
}

// NewLayout checks its arguments and returns the layout of total floats
// over world ranks.
func NewLayout(total, world int) (Layout, error) {
	if total < 0 {
		return Layout{}, fmt.Errorf("shard layout: negative total %d", total)
	}
	if world < 1 {
		return Layout{}, fmt.Errorf("shard layout: world %d, need at least 1", world)
	}
	return Layout{Total: total, World: world}, nil
}

// Range is the half-open interval [lo, hi) of the flat vector that rank
// owns. It panics if rank is outside [0, World), like an index would.
func (l Layout) Range(rank int) (lo, hi int) {
	if rank < 0 || rank >= l.World {
		panic(fmt.Sprintf("shard: rank %d outside world %d", rank, l.World))
	}
	return l.boundary(rank), l.boundary(rank + 1)
}

// Len is the number of elements rank owns.
func (l Layout) Len(rank int) int {
	lo, hi := l.Range(rank)
	return hi - lo
}

// Owner is the rank whose range holds element i of the flat vector.
func (l Layout) Owner(i int) int {
	if i < 0 || i >= l.Total {
		panic(fmt.Sprintf("shard: element %d outside vector of %d", i, l.Total))
	}
	// Ranges are nearly equal, so a guess from the average is off by at
	// most one in either direction.
	r := min(i*l.World/max(l.Total, 1), l.World-1)
	for {
		lo, hi := l.Range(r)
		switch {
		case i < lo:
			r--
		case i >= hi:
			r++
		default:
			return r
		}
	}
}

// boundary is where range r starts (r in [0, World]). The vector is
// counted in Align-sized blocks (the last one possibly short) and the
// blocks are dealt out as evenly as possible, the first ranks taking one
// extra block each when they do not divide.
func (l Layout) boundary(r int) int {
	blocks := (l.Total + Align - 1) / Align
	base, extra := blocks/l.World, blocks%l.World
	start := r*base + min(r, extra)
	return min(start*Align, l.Total)
}
