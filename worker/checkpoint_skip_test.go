package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestPeriodicCheckpointNeverWaits checks that a periodic checkpoint due
// while the previous one is still being reported is skipped (training goes
// on), and that a previous failure is not swallowed by the skip logic.
func TestPeriodicCheckpointNeverWaits(t *testing.T) {
	earlier := errors.New("report checkpoint shard of step 20: disk full")
	cases := []struct {
		name        string
		previous    func() chan error // the round in flight
		wantErr     error
		wantSkipped float64
		wantPending bool // the earlier round is still tracked afterwards
	}{
		{
			name:        "previous still in flight",
			previous:    func() chan error { return make(chan error, 1) },
			wantSkipped: 1,
			wantPending: true,
		},
		{
			name: "previous failed",
			previous: func() chan error {
				ch := make(chan error, 1)
				ch <- earlier
				return ch
			},
			wantErr: earlier,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMetrics(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			c := &checkpointer{o: Options{Metrics: m}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), pending: tc.previous()}
			err = c.startUnlessBusy(context.Background(), 40)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("startUnlessBusy: error %v, want %v", err, tc.wantErr)
			}
			var got dto.Metric
			if err := m.CheckpointSkipped.Write(&got); err != nil {
				t.Fatal(err)
			}
			if got := got.GetCounter().GetValue(); got != tc.wantSkipped {
				t.Errorf("skipped rounds %v, want %v", got, tc.wantSkipped)
			}
			if (c.pending != nil) != tc.wantPending {
				t.Errorf("pending round tracked: %v, want %v", c.pending != nil, tc.wantPending)
			}
		})
	}
}
