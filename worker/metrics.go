package worker

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/mod"
	"github.com/modcoord/modcoord/train"
)

// Metrics are a worker's Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	StepSeconds       prometheus.Histogram
	Tokens            prometheus.Counter
	FLOPs             prometheus.Counter
	Loss              prometheus.Gauge
	Step              prometheus.Gauge
	Workers           prometheus.Gauge
	RouterSelected    *prometheus.GaugeVec
	CheckpointSeconds *prometheus.HistogramVec
	CheckpointSkipped prometheus.Counter
	// BusBytesPerToken is what this worker sent on the bus per token the
	// job trained, over the current generation; OuterSteps and
	// OuterSeconds count DiLoCo's outer steps and the time in their
	// collectives.
	BusBytesPerToken prometheus.Gauge
	OuterSteps       prometheus.Counter
	OuterSeconds     prometheus.Counter
	// Resumes counts generations started from a checkpoint or from
	// peers' memory; CheckpointReads the checkpoint shard files read.
	Resumes         *prometheus.CounterVec
	CheckpointReads prometheus.Counter
	Hangs           prometheus.Counter
	ComputeSeconds  prometheus.Gauge
	Ring            *allreduce.Metrics
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		StepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "modcoord_step_duration_seconds", Help: "Wall-clock time of one training step on this worker.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		Tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modcoord_tokens_total", Help: "Tokens this worker trained on.",
		}),
		FLOPs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modcoord_worker_flops_total", Help: "Training FLOPs this worker computed (analytic count).",
		}),
		Loss: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modcoord_worker_train_loss", Help: "Global mean cross-entropy of the last step this worker took part in, nats per token (the coordinators export the job-level modcoord_job_train_loss).",
		}),
		Step: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modcoord_step", Help: "Steps completed by the current job.",
		}),
		Workers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modcoord_generation_workers", Help: "Workers in this worker's current generation.",
		}),
		RouterSelected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "modcoord_router_tokens_selected",
			Help: "Tokens per step that a layer processes on this worker: all of them for a dense layer, k per sequence for a routed one.",
		}, []string{"layer"}),
		CheckpointSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "modcoord_checkpoint_duration_seconds", Help: "Checkpoint time: stall (training paused for the snapshot) and write (snapshot to durable shard).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"phase"}),
		CheckpointSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modcoord_checkpoint_skipped_total",
			Help: "Periodic checkpoint rounds this worker skipped because the previous one was still being written or reported.",
		}),
		BusBytesPerToken: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modcoord_bus_bytes_per_token",
			Help: "Bytes this worker sent on the bus (NATS ring) per token the job trained, over the current generation.",
		}),
		OuterSteps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modcoord_diloco_outer_steps_total", Help: "DiLoCo outer steps this worker took part in.",
		}),
		OuterSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modcoord_diloco_outer_allreduce_seconds_total",
			Help: "Time this worker spent in DiLoCo's outer collectives (loss, reduce-scatter, all-gather).",
		}),
		Resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "modcoord_resumes_total",
			Help: "Generations this worker started from saved state, by where the state came from: checkpoint (disk) or memory (peers).",
		}, []string{"from"}),
		CheckpointReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modcoord_checkpoint_shard_reads_total",
			Help: "Checkpoint shard files this worker opened for reading (restores, init_from, verification).",
		}),
		Hangs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "modcoord_worker_hangs_total",
			Help: "Times this worker's run made no progress for the hang timeout and the worker left the cluster (see worker.Options.HangTimeout).",
		}),
		ComputeSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "modcoord_worker_step_compute_seconds",
			Help: "Moving average of this worker's seconds per step outside the collectives (forward, backward, optimizer); a straggler's is well above its peers'.",
		}),
	}
	for _, c := range []prometheus.Collector{m.StepSeconds, m.Tokens, m.FLOPs, m.Loss, m.Step, m.Workers, m.RouterSelected, m.CheckpointSeconds, m.CheckpointSkipped, m.Resumes, m.CheckpointReads, m.BusBytesPerToken, m.OuterSteps, m.OuterSeconds, m.Hangs, m.ComputeSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	ring, err := allreduce.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	m.Ring = ring
	return m, nil
}

func (m *Metrics) ring() *allreduce.Metrics {
	if m == nil {
		return nil
	}
	return m.Ring
}

func (m *Metrics) observeStep(cfg mod.Config, batch, world int, res train.StepResult, took time.Duration) {
	if m == nil {
		return
	}
	local := float64(batch) / float64(world) // on average
	m.StepSeconds.Observe(took.Seconds())
	m.Tokens.Add(local * float64(cfg.SeqLen))
	m.FLOPs.Add(cfg.TrainFLOPs(batch).Total() / float64(world))
	m.Loss.Set(res.Loss)
	m.Step.Set(float64(res.Step))
	m.Workers.Set(float64(world))
	for l := 0; l < cfg.Layers; l++ {
		per := cfg.SeqLen
		if cfg.IsRouted(l) {
			per = cfg.TopK()
		}
		m.RouterSelected.WithLabelValues(strconv.Itoa(l)).Set(local * float64(per))
	}
}

// observeBus records a step's outer steps and collective time (the
// increments since the last call) and the generation's bytes per token.
func (m *Metrics) observeBus(outer train.OuterStats, bytesPerToken float64) {
	if m == nil {
		return
	}
	m.OuterSteps.Add(float64(outer.Steps))
	m.OuterSeconds.Add(outer.Elapsed.Seconds())
	m.BusBytesPerToken.Set(bytesPerToken)
}

func (m *Metrics) skippedCheckpoint() {
	if m != nil {
		m.CheckpointSkipped.Inc()
	}
}

func (m *Metrics) observeCheckpoint(stall, total time.Duration) {
	if m == nil {
		return
	}
	m.CheckpointSeconds.WithLabelValues("stall").Observe(stall.Seconds())
	m.CheckpointSeconds.WithLabelValues("write").Observe(total.Seconds())
}

func (m *Metrics) resumed(from string) {
	if m != nil {
		m.Resumes.WithLabelValues(from).Inc()
	}
}

func (m *Metrics) checkpointReads(n int64) {
	if m != nil && n > 0 {
		m.CheckpointReads.Add(float64(n))
	}
}

func (m *Metrics) hang() {
	if m != nil {
		m.Hangs.Inc()
	}
}

func (m *Metrics) observeCompute(s float64) {
	if m != nil {
		m.ComputeSeconds.Set(s)
	}
}
