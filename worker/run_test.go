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
)

// TestAdversarialCancelAfterFailedStart: a cancel that reaches a run whose
// start failed before its trainer existed must not panic (it once did, on
// a nil trainer in the membership loop).
func TestAdversarialCancelAfterFailedStart(t *testing.T) {
	data := filepath.Join(t.TempDir(), "corpus.txt")
	if err := os.WriteFile(data, []byte(strings.Repeat("to be or not to be ", 200)), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{ID: "w", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	// A generation with no members cannot form a ring: the run fails
	// after loading its data and before building its trainer.
	a := coordinator.Assignment{Job: "j", Generation: 1, Status: coordinator.StatusRunning, TotalSteps: 1,
		Spec: coordinator.JobSpec{Name: "j", Data: data}}
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
