package main

import (
	"strings"
	"testing"

	"github.com/modcoord/modcoord/coordinator"
)

func TestProgressLine(t *testing.T) {
	running := coordinator.Job{ID: "job-000001", Status: coordinator.StatusRunning, Generation: 2, Members: []string{"a", "b"},
		Ledger: coordinator.Ledger{TotalSteps: 100, StepsDone: 25, BudgetFLOPs: 100, FLOPsUsed: 25},
		Recent: []coordinator.ProgressPoint{{ProgressReport: coordinator.ProgressReport{Step: 25, Loss: 2.5, Tokens: 1000, WallS: 0.5}}},
		Val:    &coordinator.ValPoint{Step: 20, Loss: 2.25}}
	waiting := running
	waiting.Status, waiting.Reason = coordinator.StatusWaiting, "waiting: 1 of 2 required workers alive"
	for _, tc := range []struct {
		name string
		job  coordinator.Job
		rate float64
		want []string
	}{
		{"running", running, 5, []string{"step 25/100", "25%", "train 2.5000", "val 2.2500 @20", "2000 tok/s", "budget 25.0%", "ETA 15s", "gen 2, 2 workers", "running"}},
		{"waiting says why once", waiting, 0, []string{"waiting: 1 of 2 required workers alive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := progressLine(tc.job, tc.rate)
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("progress line %q lacks %q", line, w)
				}
			}
			if strings.Count(line, string(tc.job.Status)) != 1 {
				t.Errorf("progress line %q names the status %d times", line, strings.Count(line, string(tc.job.Status)))
			}
		})
	}
}
