package shard

import "fmt"

// Piece is one contiguous run of a new rank's range that a single old rank
// held. Offsets are relative to the start of each rank's own range, which
// is how per-rank checkpoint shards (optimizer moments) are stored: copy
// old shard [OldLo, OldHi) into new shard [NewLo, NewHi). The two spans
// have the same length.
type Piece struct {
	OldRank      int
	OldLo, OldHi int
	NewLo, NewHi int
}

// Len is the number of elements the piece moves.
func (p Piece) Len() int { return p.NewHi - p.NewLo }

// Remap lists, in order, the pieces that make up newRank's range in next
// when the data was last laid out as prev. The pieces cover the new range
// exactly once, in increasing order, and skip old ranks with empty ranges.
func Remap(prev, next Layout, newRank int) ([]Piece, error) {
	if prev.Total != next.Total {
		return nil, fmt.Errorf("remap: old layout has %d elements, new has %d", prev.Total, next.Total)
	}
	if newRank < 0 || newRank >= next.World {
		return nil, fmt.Errorf("remap: rank %d outside new world %d", newRank, next.World)
	}
	lo, hi := next.Range(newRank)
	if lo == hi {
		return nil, nil
	}
	var pieces []Piece
	for pos, r := lo, prev.Owner(lo); pos < hi; r++ {
		olo, ohi := prev.Range(r)
		end := min(ohi, hi)
		if pos >= end {
			continue // empty old range
		}
		pieces = append(pieces, Piece{
			OldRank: r,
			OldLo:   pos - olo, OldHi: end - olo,
			NewLo: pos - lo, NewHi: end - lo,
		})
		pos = end
	}
	return pieces, nil
}
