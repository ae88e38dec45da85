package checkpoint

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

func TestNewestValidFallsBack(t *testing.T) {
	ctx := context.Background()
	damages := []struct {
		name    string
		damage  func(t *testing.T, s *DirStore, m *Manifest)
		problem string
	}{
		{"none", nil, ""},
		{"flipped data byte", func(t *testing.T, s *DirStore, m *Manifest) { flipByte(t, s.ShardPath(m, 1), -1) }, "tensor data sha256"},
		{"flipped header byte", func(t *testing.T, s *DirStore, m *Manifest) { flipByte(t, s.ShardPath(m, 2), 12) }, "rank 2"},
		{"truncated", func(t *testing.T, s *DirStore, m *Manifest) {
			if err := os.Truncate(s.ShardPath(m, 0), 100); err != nil {
				t.Fatal(err)
			}
		}, "truncated"},
		{"deleted", func(t *testing.T, s *DirStore, m *Manifest) {
			if err := os.Remove(s.ShardPath(m, 0)); err != nil {
				t.Fatal(err)
			}
		}, "missing"},
	}
	for _, d := range damages {
		t.Run(d.name, func(t *testing.T) {
			store := newTestStore(t)
			flat := flatState(50)
			older := writeCheckpoint(t, store, "fb", 100, 1, evenRanges(50, 3), flat)
			newest := writeCheckpoint(t, store, "fb", 200, 1, evenRanges(50, 3), flat)
			want := newest
			if d.damage != nil {
				d.damage(t, store, newest)
				want = older
			}
			got, skipped, err := store.NewestValid(ctx, []*Manifest{newest, older})
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("picked step %d, want %d", got.Step, want.Step)
			}
			if d.damage == nil {
				if len(skipped) != 0 {
					t.Errorf("skipped %v with nothing damaged", skipped)
				}
				return
			}
			if len(skipped) != 1 || skipped[0].Step != 200 || !strings.Contains(skipped[0].String(), d.problem) {
				t.Errorf("report %v should skip step 200 saying %q", skipped, d.problem)
			}
		})
	}
}

func TestNewestValidWithNothingValid(t *testing.T) {
	store := newTestStore(t)
	m := writeCheckpoint(t, store, "none", 1, 0, evenRanges(10, 2), flatState(10))
	flipByte(t, store.ShardPath(m, 0), -1)
	got, skipped, err := store.NewestValid(context.Background(), []*Manifest{m, nil})
	if !errors.Is(err, ErrNoValidCheckpoint) || got != nil || len(skipped) != 2 {
		t.Fatalf("NewestValid = %v, %v, %v; want ErrNoValidCheckpoint and two skipped", got, skipped, err)
	}
	if _, _, err := store.NewestValid(context.Background(), nil); !errors.Is(err, ErrNoValidCheckpoint) {
		t.Fatalf("no manifests: %v", err)
	}
}

func TestVerifyHonoursCancellation(t *testing.T) {
	store := newTestStore(t)
	m := writeCheckpoint(t, store, "cx", 1, 0, evenRanges(10, 2), flatState(10))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := store.Verify(ctx, m); !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify = %v, want context.Canceled", err)
	}
	if _, skipped, err := store.NewestValid(ctx, []*Manifest{m}); !errors.Is(err, context.Canceled) || len(skipped) != 0 {
		t.Fatalf("NewestValid = %v, skipped %v; a cancelled search must not blame the checkpoint", err, skipped)
	}
}

func TestManifestOnDisk(t *testing.T) {
	store := newTestStore(t)
	m := writeCheckpoint(t, store, "disk", 5, 2, evenRanges(10, 2), flatState(10))
	got, err := store.ReadManifest("disk", 5, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Verify(context.Background(), got); err != nil {
		t.Fatalf("manifest read back does not verify: %v", err)
	}
	if !sameJSON(got.Config, m.Config) || got.Shards[1] != m.Shards[1] {
		t.Errorf("read %+v, wrote %+v", got, m)
	}
	// A manifest copied into the wrong directory is refused.
	if err := os.MkdirAll(store.StepDir("disk", 6, 2), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, store.StepDir("disk", 6, 2)+"/"+ManifestFile, mustRead(t, store.StepDir("disk", 5, 2)+"/"+ManifestFile))
	if _, err := store.ReadManifest("disk", 6, 2); !errors.Is(err, ErrCorrupt) {
		t.Errorf("misplaced manifest: %v", err)
	}
}

func TestStepsListsOnlyStepDirs(t *testing.T) {
	store := newTestStore(t)
	writeCheckpoint(t, store, "ls", 20, 1, evenRanges(4, 1), flatState(4))
	writeCheckpoint(t, store, "ls", 3, 0, evenRanges(4, 1), flatState(4))
	meta := ShardMeta{Job: "ls", Step: 30, Generation: 1, Rank: 0, World: 2, Lo: 0, Hi: 2, Total: 4}
	if _, err := store.WriteShard(context.Background(), meta, subState(flatState(4), 0, 2)); err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{"step-12", "step-0000000001-gen-x", "notes"} {
		if err := os.MkdirAll(store.Root()+"/ls/"+junk, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	steps, err := store.Steps("ls")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range steps {
		got = append(got, stepDirName(s.Step, s.Generation)+map[bool]string{true: "+manifest", false: ""}[s.HasManifest])
	}
	want := "[step-0000000003-gen-0+manifest step-0000000020-gen-1+manifest step-0000000030-gen-1]"
	if s := strings.Join(got, " "); "["+s+"]" != want {
		t.Errorf("Steps = [%s], want %s", s, want)
	}
	if steps, err := store.Steps("nojob"); err != nil || steps != nil {
		t.Errorf("unknown job: %v, %v", steps, err)
	}
}
