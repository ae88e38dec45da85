package allreduce

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the collectives' Prometheus series. One Metrics is shared by
// every Ring of a process (a Ring per generation); nil disables them.
type Metrics struct {
	// Seconds observes each collective's duration, by op.
	Seconds *prometheus.HistogramVec
	// Bytes counts ring messages, header included, by direction
	// (sent, received).
	Bytes *prometheus.CounterVec
	// Dropped counts messages ignored on receipt, by reason: stale (an
	// older generation, job or collective), invalid (fails validation),
	// duplicate.
	Dropped *prometheus.CounterVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "modcoord", Subsystem: "allreduce", Name: "duration_seconds",
			Help:    "Duration of ring collectives.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18), // 0.5 ms .. ~65 s
		}, []string{"op"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "modcoord", Subsystem: "allreduce", Name: "bytes_total",
			Help: "Bytes of ring messages, headers included.",
		}, []string{"direction"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "modcoord", Subsystem: "allreduce", Name: "dropped_messages_total",
			Help: "Ring messages ignored on receipt.",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{m.Seconds, m.Bytes, m.Dropped} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register all-reduce metrics: %w", err)
		}
	}
	return m, nil
}
