package shard

import (
	"math/rand/v2"
	"testing"
)

func TestRangeTable(t *testing.T) {
	tests := []struct {
		name         string
		total, world int
		want         [][2]int
	}{
		{"one rank owns everything", 100, 1, [][2]int{{0, 100}}},
		{"empty vector", 0, 3, [][2]int{{0, 0}, {0, 0}, {0, 0}}},
		{"fewer elements than ranks", 3, 4, [][2]int{{0, 3}, {3, 3}, {3, 3}, {3, 3}}},
		{"fewer blocks than ranks", 40, 4, [][2]int{{0, 16}, {16, 32}, {32, 40}, {40, 40}}},
		{"even split", 64, 4, [][2]int{{0, 16}, {16, 32}, {32, 48}, {48, 64}}},
		{"extra blocks go to the first ranks", 80, 3, [][2]int{{0, 32}, {32, 64}, {64, 80}}},
		{"short last block", 70, 2, [][2]int{{0, 48}, {48, 70}}},
		{"not divisible, large", 1000003, 8, [][2]int{
			{0, 125008}, {125008, 250016}, {250016, 375024}, {375024, 500032},
			{500032, 625040}, {625040, 750032}, {750032, 875024}, {875024, 1000003}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := NewLayout(tt.total, tt.world)
			if err != nil {
				t.Fatal(err)
			}
			for r, w := range tt.want {
				lo, hi := l.Range(r)
				if lo != w[0] || hi != w[1] {
					t.Errorf("Range(%d) = [%d,%d), want [%d,%d)", r, lo, hi, w[0], w[1])
				}
			}
		})
	}
}

func TestNewLayoutRejects(t *testing.T) {
	for _, tt := range []struct{ total, world int }{{-1, 1}, {10, 0}, {10, -2}} {
		if _, err := NewLayout(tt.total, tt.world); err == nil {
			t.Errorf("NewLayout(%d, %d) succeeded", tt.total, tt.world)
		}
	}
}

// TestRangeProperties checks, for random sizes, that the ranges tile the
// vector in rank order, start on Align boundaries and are balanced.
func TestRangeProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		total, world := rng.IntN(5000), 1+rng.IntN(40)
		if rng.IntN(4) == 0 {
			total = rng.IntN(world * Align) // few blocks: empty ranges
		}
		l, _ := NewLayout(total, world)
		pos, minLen, maxLen := 0, total, 0
		for r := range world {
			lo, hi := l.Range(r)
			if lo != pos || hi < lo {
				t.Fatalf("total %d world %d: rank %d has [%d,%d) after %d", total, world, r, lo, hi, pos)
			}
			if lo%Align != 0 && lo != total {
				t.Fatalf("total %d world %d: rank %d starts at %d, not a multiple of %d", total, world, r, lo, Align)
			}
			for _, i := range []int{lo, hi - 1} {
				if hi > lo && l.Owner(i) != r {
					t.Fatalf("total %d world %d: Owner(%d) = %d, want %d", total, world, i, l.Owner(i), r)
				}
			}
			if hi > lo || total >= world*Align {
				minLen, maxLen = min(minLen, hi-lo), max(maxLen, hi-lo)
			}
			pos = hi
		}
		if pos != total {
			t.Fatalf("total %d world %d: ranges end at %d", total, world, pos)
		}
		if maxLen-minLen >= 2*Align {
			t.Fatalf("total %d world %d: range lengths from %d to %d", total, world, minLen, maxLen)
		}
	}
}
