package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/modcoord/modcoord/pki"
)

// controller is the leader's scheduler. It runs only while its node leads:
// it watches the live workers in etcd, commits new generations through raft
// when the set of members should change, commits checkpoints whose shards
// are all reported, and publishes assignments to etcd.
type controller struct {
	node    *Node
	fsm     *FSM
	etcd    *clientv3.Client
	cluster string
	// signer signs assignments (nil: written unsigned).
	signer   *pki.Credentials
	debounce time.Duration
	resync   time.Duration
	log      *slog.Logger
	// live is the number of live workers, -1 while not leading.
	live *atomic.Int64
	// memoryWait bounds how long the next generation waits for the memory
	// reports of a stopped one (0: it does not wait); memWaits is since
	// when it has waited, per job, and wake ends the wait.
	memoryWait time.Duration
	memWaits   map[string]memoryWait
	wake       *time.Timer
	// board gets every live set, load reports included (stragglers.go).
	board *loadBoard
}

// run schedules until ctx is canceled (leadership lost or shutdown).
func (c *controller) run(ctx context.Context) {
	defer c.live.Store(-1)
	defer c.board.set(nil)
	// A new leader's FSM may lag the log; act only on all committed state.
	for ctx.Err() == nil {
		if err := c.node.CatchUp(ctx); err == nil {
			break
		} else {
			c.log.Warn("leader barrier failed; retrying", "err", err)
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
	liveCh := make(chan map[string]WorkerInfo, 1)
	go watchWorkers(ctx, c.etcd, c.cluster, c.log, func(m map[string]WorkerInfo) {
		select { // keep only the newest set; this is the only sender
		case <-liveCh:
		default:
		}
		liveCh <- m
	})

	var live map[string]WorkerInfo // nil until the first listing
	published := map[string]Assignment{}
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	debouncing := false
	resync := time.NewTicker(c.resync)
	defer resync.Stop()
	c.memWaits = map[string]memoryWait{}
	c.wake = time.NewTimer(time.Hour)
	c.wake.Stop()
	defer c.wake.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-liveCh:
			first := live == nil
			sameIDs := !first && maps.EqualFunc(live, m, func(WorkerInfo, WorkerInfo) bool { return true })
			live = m
			c.live.Store(int64(len(m)))
			c.board.set(m)
			if sameIDs {
				continue // a worker's load report: membership is unchanged
			}
			if first {
				c.reconcile(ctx, live, published)
				continue
			}
			// A burst of joins or leaves forms one generation.
			debounce.Reset(c.debounce)
			debouncing = true
		case <-debounce.C:
			debouncing = false
			c.reconcile(ctx, live, published)
		case <-c.fsm.Changed():
			if live != nil && !debouncing {
				c.reconcile(ctx, live, published)
			}
		case <-resync.C:
			if live != nil && !debouncing {
				c.reconcile(ctx, live, published)
			}
		case <-c.wake.C:
			if live != nil && !debouncing {
				c.reconcile(ctx, live, published)
			}
		}
	}
}

func (c *controller) reconcile(ctx context.Context, live map[string]WorkerInfo, published map[string]Assignment) {
	ids := slices.Collect(maps.Keys(live))
	if job, ok := c.fsm.NextJob(len(ids)); ok {
		c.schedule(ctx, job, live)
		c.commitPending(ctx, job.ID)
		c.explainBlocked(ctx, job.ID, len(ids))
	}
	c.publish(ctx, published)
}

// schedule starts a new generation of the job when its members should
// change: it is queued, a member left, a better set of workers is alive,
// or a member's run stopped (it reported its memory). A running job's
// next generation waits, a bounded time, for the memory reports of its
// live members, and resumes from their memory when that holds the state.
func (c *controller) schedule(ctx context.Context, job Job, liveSet map[string]WorkerInfo) {
	live := slices.Collect(maps.Keys(liveSet))
	members := pickMembers(live, job.Spec)
	switch {
	case job.Status == StatusRunning && slices.Equal(members, job.Members) && len(job.Memory) == 0:
		return
	case job.Status == StatusWaiting && members == nil && job.Live == len(live):
		return
	}
	var mem *MemoryResume
	if len(members) > 0 {
		if c.awaitReports(job, liveSet) {
			return
		}
		mem = decideMemory(job, holdersAlive(job, liveSet))
	}
	cmd := Command{Type: CmdStartGeneration, Job: job.ID, At: time.Now().UTC(),
		StartGeneration: &StartGenerationCommand{Generation: job.Generation + 1, Members: members, Live: len(live), Memory: mem}}
	if _, err := c.node.Apply(ctx, cmd); err != nil {
		c.log.Warn("start generation failed; will retry", "job", job.ID, "err", err)
		return
	}
	delete(c.memWaits, job.ID)
	from := "checkpoint"
	if mem != nil {
		from = fmt.Sprintf("memory of generation %d at step %d", mem.From, mem.Step)
	}
	c.log.Info("new generation", "job", job.ID, "generation", job.Generation+1, "members", members, "live", len(live), "from", from)
}

// explainBlocked gives each job that cannot start with live workers, other
// than the one scheduled, a generation without members: its status then
// says it waits and why, while jobs behind it that fit may run.
func (c *controller) explainBlocked(ctx context.Context, next string, live int) {
	for _, job := range c.fsm.Blocked(live, next) {
		cmd := Command{Type: CmdStartGeneration, Job: job.ID, At: time.Now().UTC(),
			StartGeneration: &StartGenerationCommand{Generation: job.Generation + 1, Live: live}}
		if _, err := c.node.Apply(ctx, cmd); err != nil {
			c.log.Warn("mark job waiting failed; will retry", "job", job.ID, "err", err)
		}
	}
}

// commitPending finishes a checkpoint whose shards were all reported but
// whose commit was never applied (the leader that saw the last report
// died before committing).
func (c *controller) commitPending(ctx context.Context, id string) {
	job, ok := c.fsm.Job(id)
	if !ok || job.Status != StatusRunning || job.Pending == nil || len(job.Pending.Shards) != job.Pending.World {
		return
	}
	cmd := Command{Type: CmdCommitCheckpoint, Job: id, At: time.Now().UTC(),
		Commit: &CommitCheckpoint{Generation: job.Pending.Generation, Step: job.Pending.Step}}
	if _, err := c.node.Apply(ctx, cmd); err != nil {
		c.log.Warn("commit pending checkpoint failed", "job", id, "step", job.Pending.Step, "err", err)
	}
}

// publish writes every started job's assignment that etcd may not have.
func (c *controller) publish(ctx context.Context, published map[string]Assignment) {
	for _, j := range c.fsm.Jobs() {
		if j.Status == StatusQueued {
			continue
		}
		a := assignmentFor(j)
		if old, ok := published[j.ID]; ok && !supersedes(a, old) {
			continue
		}
		wrote, err := publishAssignment(ctx, c.etcd, c.cluster, a, c.signer)
		if err != nil {
			c.log.Warn("publish assignment failed; will retry", "job", j.ID, "err", err)
			continue
		}
		published[j.ID] = a
		if wrote {
			c.log.Info("assignment published", "job", j.ID, "generation", a.Generation, "status", a.Status, "members", a.Members)
		}
	}
}
