package allreduce

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetricsRecordCollectives(t *testing.T) {
	checkGoroutines(t)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	const world, n = 3, 100
	rings, mt := memRings(t, world, 16, func(c *Config) { c.Metrics = m })
	// One stale message waiting in rank 0's inbox.
	stale := header{phase: phaseReduceScatter, from: 2, job: jobHash("test-job"), gen: 6, seq: 1, step: 1}
	msg := make([]byte, headerSize)
	stale.put(msg)
	mt.Send(InboxSubject("test-job", 7, 0), msg)

	bufs := cloneAll(randomVectors(rand.New(rand.NewPCG(8, 8)), world, n))
	errs, _ := onAllRanks(world, func(r int) error { return rings[r].AllReduce(context.Background(), 1, bufs[r]) })
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"reduce-scatter", "all-gather"} {
		if got := gathered(t, reg, "modcoord_allreduce_duration_seconds", "op", op); got != world {
			t.Errorf("%v %s durations observed, want %d", got, op, world)
		}
	}
	var sent, received uint64
	for _, r := range rings {
		sent += r.Stats().SentBytes
		received += r.Stats().ReceivedBytes
	}
	if got := gathered(t, reg, "modcoord_allreduce_bytes_total", "direction", "sent"); got != float64(sent) || got == 0 {
		t.Errorf("bytes sent %v, rings counted %d", got, sent)
	}
	if got := gathered(t, reg, "modcoord_allreduce_bytes_total", "direction", "received"); got != float64(received) {
		t.Errorf("bytes received %v, rings counted %d", got, received)
	}
	if got := gathered(t, reg, "modcoord_allreduce_dropped_messages_total", "reason", "stale"); got != 1 {
		t.Errorf("%v stale drops, want 1", got)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
}

// gathered is the value of a counter, or the sample count of a histogram,
// with the given label, as the registry would serve it.
func gathered(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					if h := m.GetHistogram(); h != nil {
						return float64(h.GetSampleCount())
					}
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
