package worker

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/jobspec"
)

// TestAdversarialCancelAfterFailedStart: a cancel that reaches a run whose
// start failed before its trainer existed must not panic (it once did, on
// a nil trainer in the membership loop).
func TestAdversarialCancelAfterFailedStart(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "corpus.txt"), []byte(strings.Repeat("to be or not to be ", 200)), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := jobspec.Parse([]byte(`name: j
data: corpus.txt
model: {d_model: 32, layers: 2, heads: 2, seq_len: 16}
batch: 2
budget_flops: 1e9
`), jobspec.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{ID: "w", DataRoot: root, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	// A generation with no members cannot form a ring: the run fails
	// after loading its data and before building its trainer.
	a := coordinator.Assignment{Job: "j", Generation: 1, Status: coordinator.StatusRunning, TotalSteps: 1, Spec: spec}
	r := startRun(context.Background(), o, a, 0)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not end")
	}
	if !r.failed || r.trainer != nil {
		t.Fatalf("run failed=%v trainer=%v; the test needs a start that fails before the trainer exists", r.failed, r.trainer)
	}
	r.requestStop() // what the membership loop does on a cancel
}
