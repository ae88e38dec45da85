package isoflop

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/modcoord/modcoord/atomicfile"
)

// RunsDir is the directory inside Options.OutDir that holds one JSON file
// per finished run. A run's file is written atomically once the run has
// been trained and scored, so a sweep stopped at any point (Ctrl-C, kill,
// a crash) leaves only whole runs behind, and the next sweep with the same
// --out skips them: a long sweep can be run in pieces.
const RunsDir = "runs"

// maxRunFile bounds a run file read back: a real one is a few kilobytes.
const maxRunFile = 1 << 20

// runPath is spec's file under dir.
func runPath(dir string, spec RunSpec) string {
	return filepath.Join(dir, RunsDir, spec.fileName())
}

// saveRun persists one finished run.
func saveRun(dir string, spec RunSpec, r Result) error {
	return atomicfile.Write(runPath(dir, spec), 0o644, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	})
}

// loadRun reads spec's file back: ok is false when the run has not
// finished yet. A file that does not hold this very run (other steps,
// batch, sequence length or size: a sweep with other flags wrote it) is an
// error rather than a silent skip, since its result would not be the
// planned one.
func loadRun(dir string, spec RunSpec) (r Result, ok bool, err error) {
	path := runPath(dir, spec)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("resume: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRunFile+1))
	if err != nil {
		return r, false, fmt.Errorf("resume: read %s: %w", path, err)
	}
	if len(b) > maxRunFile {
		return r, false, fmt.Errorf("resume: %s is over %d bytes, not a run file; delete it to train the run again", path, maxRunFile)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("resume: %s: %w; delete it to train the run again", path, err)
	}
	want := newResult(spec)
	if r.Budget != want.Budget || r.Variant != want.Variant || r.Shape != want.Shape || r.Seed != want.Seed ||
		r.Steps != want.Steps || r.Batch != want.Batch || r.SeqLen != want.SeqLen || r.Params != want.Params {
		return r, false, fmt.Errorf("resume: %s holds %s/%s/%s seed %d (%d steps, batch %d, seq_len %d, %d params), but this sweep plans %s (%d steps, batch %d, seq_len %d, %d params): it was written with other flags; use another --out, or delete the file",
			path, fmtBudget(r.Budget), r.Variant, r.Shape, r.Seed, r.Steps, r.Batch, r.SeqLen, r.Params,
			spec.ID(), want.Steps, want.Batch, want.SeqLen, want.Params)
	}
	return r, true, nil
}

func fmtBudget(b float64) string { return fmt.Sprintf("%.3g", b) }
