package coordinator

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// stateCollector exports the FSM and raft state at scrape time, so metrics
// can never disagree with GET /v1/jobs on the same node.
type stateCollector struct {
	fsm  *FSM
	node *Node
	live *atomic.Int64
	// board is the leader's view of the workers' load reports.
	board *loadBoard

	budgetRemaining, flopsUsed, flopsSpent, stepsDone, stepsTotal                *prometheus.Desc
	checkpointStep, checkpointEvery                                              *prometheus.Desc
	loss, valLoss, valStep, generation, members, status, workers, leader, commit *prometheus.Desc
	computeS, stragglers                                                         *prometheus.Desc
}

func newMetricsRegistry(fsm *FSM, node *Node, live *atomic.Int64, board *loadBoard) *prometheus.Registry {
	job := []string{"job"}
	c := &stateCollector{
		fsm: fsm, node: node, live: live, board: board,
		computeS:        prometheus.NewDesc("modcoord_worker_compute_seconds", "Seconds per step a live worker spends outside the collectives, as it last published (exported by the leader only).", []string{"worker"}, nil),
		stragglers:      prometheus.NewDesc("modcoord_job_stragglers", "Members of the job's running generation whose compute per step is at least 1.5× their peers' median: reported, not evicted (exported by the leader only).", job, nil),
		budgetRemaining: prometheus.NewDesc("modcoord_job_budget_remaining_flops", "FLOP budget not yet used by the job's progress.", job, nil),
		flopsUsed:       prometheus.NewDesc("modcoord_job_used_flops", "FLOPs used by the job's progress: steps_done × flops_per_step (drops back when a generation resumes from an older checkpoint).", job, nil),
		flopsSpent:      prometheus.NewDesc("modcoord_job_spent_flops_total", "FLOPs the cluster spent on the job, redone steps included.", job, nil),
		stepsDone:       prometheus.NewDesc("modcoord_job_steps_done", "Steps completed.", job, nil),
		stepsTotal:      prometheus.NewDesc("modcoord_job_budget_steps", "Steps the job's budget buys.", job, nil),
		// With the next two an alert can see checkpoints falling behind:
		// steps_done − committed_step growing past a few checkpoint_every.
		checkpointStep:  prometheus.NewDesc("modcoord_job_checkpoint_committed_step", "Step of the job's last committed checkpoint (0: none yet).", job, nil),
		checkpointEvery: prometheus.NewDesc("modcoord_job_checkpoint_every_steps", "The job's checkpoint interval in steps (its spec's checkpoint_every).", job, nil),
		loss:            prometheus.NewDesc("modcoord_job_train_loss", "Last training loss rank 0 reported for the job (nats per token). Named apart from the workers' modcoord_worker_train_loss: this one is per job and exported identically by every coordinator, that one per worker process.", job, nil),
		valLoss:         prometheus.NewDesc("modcoord_job_val_loss", "Last validation loss the job's ranks measured (nats per token, on the spec's eval_windows validation windows, every eval_every steps and at the last step).", job, nil),
		valStep:         prometheus.NewDesc("modcoord_job_val_step", "Step after which modcoord_job_val_loss was measured.", job, nil),
		generation:      prometheus.NewDesc("modcoord_job_generation", "Current membership generation.", job, nil),
		members:         prometheus.NewDesc("modcoord_job_members", "Workers in the current generation.", job, nil),
		status:          prometheus.NewDesc("modcoord_job_status", "1 for the job's current status.", []string{"job", "status"}, nil),
		workers:         prometheus.NewDesc("modcoord_workers", "Live workers registered in etcd (exported by the leader only).", nil, nil),
		leader:          prometheus.NewDesc("modcoord_raft_leader", "1 if this coordinator is the raft leader.", nil, nil),
		commit:          prometheus.NewDesc("modcoord_raft_commit_index", "Raft commit index on this coordinator.", nil, nil),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.budgetRemaining, c.flopsUsed, c.flopsSpent, c.stepsDone, c.stepsTotal,
		c.checkpointStep, c.checkpointEvery, c.loss, c.valLoss, c.valStep, c.generation, c.members, c.status, c.workers, c.leader, c.commit,
		c.computeS, c.stragglers} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, j := range c.fsm.Jobs() {
		l := j.Ledger
		gauge(c.budgetRemaining, l.RemainingFLOPs(), j.ID)
		gauge(c.flopsUsed, l.FLOPsUsed, j.ID)
		ch <- prometheus.MustNewConstMetric(c.flopsSpent, prometheus.CounterValue, l.FLOPsSpent, j.ID)
		gauge(c.stepsDone, float64(l.StepsDone), j.ID)
		gauge(c.stepsTotal, float64(l.TotalSteps), j.ID)
		committed := int64(0)
		if j.Checkpoint != nil {
			committed = j.Checkpoint.Step
		}
		gauge(c.checkpointStep, float64(committed), j.ID)
		gauge(c.checkpointEvery, float64(j.Spec.CheckpointEvery), j.ID)
		gauge(c.generation, float64(j.Generation), j.ID)
		if j.Status.Active() {
			gauge(c.members, float64(len(j.Members)), j.ID)
		}
		gauge(c.status, 1, j.ID, string(j.Status))
		if loss, ok := j.LastLoss(); ok {
			gauge(c.loss, loss, j.ID)
		}
		if v, ok := j.LastVal(); ok {
			gauge(c.valLoss, v.Loss, j.ID)
			gauge(c.valStep, float64(v.Step), j.ID)
		}
		if n := c.live.Load(); n >= 0 && j.Status == StatusRunning {
			gauge(c.stragglers, float64(len(c.board.stragglers(j, time.Now()))), j.ID)
		}
	}
	if n := c.live.Load(); n >= 0 {
		gauge(c.workers, float64(n))
		for w, s := range c.board.computeS() {
			gauge(c.computeS, s, w)
		}
	}
	leader := 0.0
	if c.node.IsLeader() {
		leader = 1
	}
	gauge(c.leader, leader)
	gauge(c.commit, float64(c.node.CommitIndex()))
}
