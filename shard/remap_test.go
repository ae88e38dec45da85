package shard

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestRemapTable(t *testing.T) {
	tests := []struct {
		name       string
		total      int
		prev, next int
		rank       int
		want       []Piece
	}{
		{"same layout is one piece", 64, 4, 4, 2, []Piece{{OldRank: 2, OldLo: 0, OldHi: 16, NewLo: 0, NewHi: 16}}},
		{"shrink 4 to 2", 64, 4, 2, 1, []Piece{
			{OldRank: 2, OldLo: 0, OldHi: 16, NewLo: 0, NewHi: 16},
			{OldRank: 3, OldLo: 0, OldHi: 16, NewLo: 16, NewHi: 32}}},
		{"grow 2 to 4", 64, 2, 4, 1, []Piece{{OldRank: 0, OldLo: 16, OldHi: 32, NewLo: 0, NewHi: 16}}},
		{"uneven 3 to 2", 80, 3, 2, 1, []Piece{
			{OldRank: 1, OldLo: 16, OldHi: 32, NewLo: 0, NewHi: 16},
			{OldRank: 2, OldLo: 0, OldHi: 16, NewLo: 16, NewHi: 32}}},
		{"empty new range", 3, 1, 4, 3, nil},
		{"skips empty old ranges", 20, 4, 1, 0, []Piece{
			{OldRank: 0, OldLo: 0, OldHi: 16, NewLo: 0, NewHi: 16},
			{OldRank: 1, OldLo: 0, OldHi: 4, NewLo: 16, NewHi: 20}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prev, _ := NewLayout(tt.total, tt.prev)
			next, _ := NewLayout(tt.total, tt.next)
			got, err := Remap(prev, next, tt.rank)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Remap = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRemapRejects(t *testing.T) {
	a, _ := NewLayout(100, 2)
	b, _ := NewLayout(101, 2)
	if _, err := Remap(a, b, 0); err == nil {
		t.Error("remap between different totals succeeded")
	}
	if _, err := Remap(a, a, 2); err == nil {
		t.Error("remap of rank outside the world succeeded")
	}
}

// TestRemapCoversEveryElementOnce moves a vector from a random old layout
// to a random new one through Remap and checks every element lands once,
// in the right place, and every old element is read once.
func TestRemapCoversEveryElementOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		total := rng.IntN(3000)
		prev, _ := NewLayout(total, 1+rng.IntN(12))
		next, _ := NewLayout(total, 1+rng.IntN(12))

		// Old shards hold their global indices, so a misplaced copy shows.
		oldShards := make([][]int, prev.World)
		for r := range oldShards {
			lo, hi := prev.Range(r)
			for i := lo; i < hi; i++ {
				oldShards[r] = append(oldShards[r], i)
			}
		}
		written := make([]int, total)
		read := make([]int, total)
		for r := range next.World {
			lo, hi := next.Range(r)
			pieces, err := Remap(prev, next, r)
			if err != nil {
				t.Fatal(err)
			}
			newShard := make([]int, hi-lo)
			pos := 0
			for _, p := range pieces {
				if p.NewLo != pos || p.Len() <= 0 || p.OldHi-p.OldLo != p.Len() {
					t.Fatalf("total %d %d→%d rank %d: bad piece %+v at %d", total, prev.World, next.World, r, p, pos)
				}
				copy(newShard[p.NewLo:p.NewHi], oldShards[p.OldRank][p.OldLo:p.OldHi])
				olo, _ := prev.Range(p.OldRank)
				for i := p.OldLo; i < p.OldHi; i++ {
					read[olo+i]++
				}
				pos = p.NewHi
			}
			if pos != hi-lo {
				t.Fatalf("total %d %d→%d rank %d: pieces cover %d of %d", total, prev.World, next.World, r, pos, hi-lo)
			}
			for i, g := range newShard {
				if g != lo+i {
					t.Fatalf("total %d %d→%d rank %d: element %d holds %d", total, prev.World, next.World, r, lo+i, g)
				}
				written[g]++
			}
		}
		for i := range total {
			if written[i] != 1 || read[i] != 1 {
				t.Fatalf("total %d %d→%d: element %d written %d times, read %d times", total, prev.World, next.World, i, written[i], read[i])
			}
		}
	}
}
