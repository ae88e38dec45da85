package worker

import (
	"context"
	"testing"
	"time"
)

// TestWatchRunTinyTimeout: a hang timeout under 8 ns (a mistyped flag) is
// a bad setting, not a panic in time.NewTicker.
func TestWatchRunTinyTimeout(t *testing.T) {
	r := &run{done: make(chan struct{})}
	close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, d := range []time.Duration{time.Nanosecond, 7 * time.Nanosecond} {
		watchRun(ctx, r, nil, d, nil, nil)
	}
}
