package isoflop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run file that is too large or not JSON is refused with an error
// naming the problem; a missing one means the run has not finished; a
// saved run reads back.
func TestLoadRunChecksTheFile(t *testing.T) {
	opt := resumeOptions(t)
	runs, _, err := Plan(opt.Budgets, opt.Shapes, opt.Variants, opt.seeds(), opt.SeqLen, opt.Batch)
	if err != nil || len(runs) == 0 {
		t.Fatalf("plan: %d runs, err %v", len(runs), err)
	}
	spec := runs[0]
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, RunsDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := loadRun(dir, spec); ok || err != nil {
		t.Fatalf("no file: ok %v, err %v; want not finished and no error", ok, err)
	}
	if err := saveRun(dir, spec, newResult(spec)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := loadRun(dir, spec); !ok || err != nil {
		t.Fatalf("saved run: ok %v, err %v", ok, err)
	}
	for _, c := range []struct {
		name, want string
		body       []byte
	}{
		// Valid JSON behind the padding, so only the size check refuses it.
		{"too large", "is over", []byte(strings.Repeat(" ", maxRunFile) + "{}")},
		{"not JSON", "delete it", []byte("{")},
	} {
		if err := os.WriteFile(runPath(dir, spec), c.body, 0o644); err != nil {
			t.Fatal(err)
		}
		_, ok, err := loadRun(dir, spec)
		if ok || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: ok %v, err %v; want an error containing %q", c.name, ok, err, c.want)
		}
	}
}
