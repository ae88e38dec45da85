package checkpoint

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func TestPrune(t *testing.T) {
	ctx := context.Background()
	flat := flatState(12)
	ranges := evenRanges(12, 2)
	// setup writes commits at steps 10..50 (generation 1), an abandoned
	// attempt at step 25, an in-flight attempt at step 60, and an in-flight
	// attempt of a newer generation at an old step (after a rollback).
	setup := func(t *testing.T) (*DirStore, []*Manifest) {
		store := newTestStore(t)
		var committed []*Manifest
		for step := int64(10); step <= 50; step += 10 {
			committed = append([]*Manifest{writeCheckpoint(t, store, "p", step, 1, ranges, flat)}, committed...)
		}
		for _, a := range []struct {
			step int64
			gen  uint64
		}{{25, 1}, {60, 1}, {5, 2}} {
			meta := ShardMeta{Job: "p", Step: a.step, Generation: a.gen, Rank: 0, World: 2, Lo: 0, Hi: 6, Total: 12}
			if _, err := store.WriteShard(ctx, meta, subState(flat, 0, 6)); err != nil {
				t.Fatal(err)
			}
		}
		return store, committed
	}
	remaining := func(t *testing.T, store *DirStore) string {
		steps, err := store.Steps("p")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range steps {
			names = append(names, filepath.Base(s.Path))
		}
		sort.Strings(names)
		return strings.ReplaceAll(strings.Join(names, " "), "step-00000000", "")
	}

	tests := []struct {
		name    string
		keep    int
		damage  func(t *testing.T, s *DirStore, newest *Manifest)
		wantErr string
		left    string
	}{
		{"keep two", 2, nil, "",
			// 10, 20, 30 and the abandoned 25 go; 60 (in flight) and the newer
			// generation's 05 stay.
			"05-gen-2 40-gen-1 50-gen-1 60-gen-1"},
		{"keep one", 1, nil, "", "05-gen-2 50-gen-1 60-gen-1"},
		{"keep more than exist", 9, nil, "", "05-gen-2 10-gen-1 20-gen-1 25-gen-1 30-gen-1 40-gen-1 50-gen-1 60-gen-1"},
		{"keep zero is refused", 0, nil, "keep must be at least 1",
			"05-gen-2 10-gen-1 20-gen-1 25-gen-1 30-gen-1 40-gen-1 50-gen-1 60-gen-1"},
		{"newest shard missing", 2, func(t *testing.T, s *DirStore, newest *Manifest) {
			if err := os.Remove(s.ShardPath(newest, 1)); err != nil {
				t.Fatal(err)
			}
		}, "not intact", "05-gen-2 10-gen-1 20-gen-1 25-gen-1 30-gen-1 40-gen-1 50-gen-1 60-gen-1"},
		{"newest shard truncated", 1, func(t *testing.T, s *DirStore, newest *Manifest) {
			if err := os.Truncate(s.ShardPath(newest, 0), 10); err != nil {
				t.Fatal(err)
			}
		}, "not intact", "05-gen-2 10-gen-1 20-gen-1 25-gen-1 30-gen-1 40-gen-1 50-gen-1 60-gen-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, committed := setup(t)
			if tt.damage != nil {
				tt.damage(t, store, committed[0])
			}
			removed, err := store.Prune(ctx, "p", committed, tt.keep)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Prune = %v, want error %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := remaining(t, store); got != tt.left {
				t.Errorf("left %q, want %q (removed %v)", got, tt.left, removed)
			}
			for _, m := range committed[:min(tt.keep, len(committed))] {
				if tt.wantErr == "" {
					if err := store.Verify(ctx, m); err != nil {
						t.Errorf("kept checkpoint %d no longer verifies: %v", m.Step, err)
					}
				}
			}
		})
	}
}

func TestPruneRejectsBadLists(t *testing.T) {
	store := newTestStore(t)
	m := writeCheckpoint(t, store, "q", 1, 0, evenRanges(4, 1), flatState(4))
	other := writeCheckpoint(t, store, "r", 1, 0, evenRanges(4, 1), flatState(4))
	for name, list := range map[string][]*Manifest{
		"duplicate": {m, m},
		"other job": {m, other},
		"nil":       {m, nil},
	} {
		if _, err := store.Prune(context.Background(), "q", list, 1); err == nil {
			t.Errorf("%s: Prune accepted the list", name)
		}
	}
	if err := store.Verify(context.Background(), m); err != nil {
		t.Errorf("a refused prune damaged the checkpoint: %v", err)
	}
}
