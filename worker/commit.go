package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/modcoord/modcoord/coordinator"
	"github.com/modcoord/modcoord/train"
)

// checkpointer writes this rank's shard in the background and reports it;
// at most one checkpoint is in flight.
type checkpointer struct {
	o       Options
	a       coordinator.Assignment
	tr      *train.Trainer
	store   *checkpoint.DirStore
	writer  *checkpoint.AsyncWriter
	rank    int
	log     *slog.Logger
	pending chan error // result of the checkpoint in flight, if any
	mu      sync.Mutex
}

func newCheckpointer(o Options, a coordinator.Assignment, tr *train.Trainer, store *checkpoint.DirStore, rank int, log *slog.Logger) *checkpointer {
	return &checkpointer{o: o, a: a, tr: tr, store: store, writer: checkpoint.NewAsyncWriter(store), rank: rank, log: log}
}

// start snapshots the shard (the only part that stalls training) and
// writes and reports it in the background.
func (c *checkpointer) start(ctx context.Context) error {
	if err := c.wait(ctx); err != nil {
		return err
	}
	meta, err := c.tr.ShardMeta(c.a.Job, c.a.Generation)
	if err != nil {
		return err
	}
	t0 := time.Now()
	// DiLoCo's per-rank inner state goes to disk before the shard is
	// reported, so a committed step always has it.
	if err := c.tr.SaveRankState(c.store, c.a.Job, c.a.Generation); err != nil {
		return fmt.Errorf("checkpoint step %d: %w", meta.Step, err)
	}
	p, err := c.writer.Snapshot(ctx, meta, c.tr.ShardState())
	if err != nil {
		return fmt.Errorf("checkpoint step %d: %w", meta.Step, err)
	}
	done := make(chan error, 1)
	c.pending = done
	go func() {
		info, err := p.Wait(ctx)
		if err != nil {
			done <- fmt.Errorf("write checkpoint shard of step %d: %w", meta.Step, err)
			return
		}
		c.o.Metrics.observeCheckpoint(p.Stall(), time.Since(t0))
		resp, err := c.o.Coordinator.ReportShard(ctx, c.a.Job, coordinator.ShardReport{
			Generation: c.a.Generation, Step: meta.Step, Shard: info, Config: meta.Config,
		})
		if errors.Is(err, coordinator.ErrStale) {
			// A newer checkpoint round began (another rank raced ahead after
			// a coordinator failover): this one is abandoned, not fatal.
			c.log.Warn("checkpoint round abandoned", "step", meta.Step, "err", err)
			done <- nil
			return
		}
		if err != nil {
			done <- fmt.Errorf("report checkpoint shard of step %d: %w", meta.Step, err)
			return
		}
		if resp.Committed && resp.Manifest != nil {
			c.committed(ctx, resp)
		}
		c.log.Debug("checkpoint shard written", "step", meta.Step, "stall", p.Stall(), "committed", resp.Committed)
		done <- nil
	}()
	return nil
}

// committed runs on the rank whose report completed the checkpoint: it
// writes MANIFEST.json, the on-disk mark of a commit, and then prunes
// (only now that a newer checkpoint is durable): the checkpoints that fell
// out of retention, and abandoned attempts older than every retained one,
// such as the shards of a round another rank skipped.
func (c *checkpointer) committed(ctx context.Context, resp coordinator.ShardResponse) {
	if err := c.store.WriteManifest(ctx, resp.Manifest); err != nil {
		c.log.Warn("write manifest of a committed checkpoint", "step", resp.Manifest.Step, "err", err)
		return
	}
	// Prune wants every commit it knows of, newest first: the retained
	// ones, then the dropped ones (older), of which it keeps the first.
	var commits []*checkpoint.Manifest
	for _, group := range [][]checkpoint.Manifest{resp.Retained, resp.Dropped} {
		for i := len(group) - 1; i >= 0; i-- {
			commits = append(commits, &group[i])
		}
	}
	removed, err := c.store.Prune(ctx, resp.Manifest.Job, commits, len(resp.Retained))
	if err != nil {
		c.log.Warn("prune checkpoints", "err", err)
	}
	if len(removed) > 0 {
		c.log.Debug("pruned checkpoints", "dirs", removed)
	}
}

// startUnlessBusy starts a periodic checkpoint, unless the previous one is
// still being written or reported: then this round is skipped rather than
// stalling training. Waiting would hold this rank out of the ring, and a
// report can take seconds while the coordinators elect a new leader; its
// peers would then declare it silent and break the generation. A skipped
// round is never committed (this rank's shard is missing), so the next
// one supersedes it, as after a failover.
func (c *checkpointer) startUnlessBusy(ctx context.Context, step int64) error {
	busy, err := c.inFlight()
	if err != nil {
		return err
	}
	if busy {
		c.log.Warn("checkpoint round skipped: the previous one is still being written or reported", "step", step)
		c.o.Metrics.skippedCheckpoint()
		return nil
	}
	return c.start(ctx)
}

// inFlight reports, without blocking, whether a checkpoint is still being
// written or reported; the result of one that has finished is collected.
func (c *checkpointer) inFlight() (bool, error) {
	if c.pending == nil {
		return false, nil
	}
	select {
	case err := <-c.pending:
		c.pending = nil
		return false, err
	default:
		return true, nil
	}
}

// wait blocks until the checkpoint in flight is written and reported.
func (c *checkpointer) wait(ctx context.Context) error {
	if c.pending == nil {
		return nil
	}
	select {
	case err := <-c.pending:
		c.pending = nil
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *checkpointer) close() {
	if err := c.writer.Close(); err != nil {
		c.log.Warn("close checkpoint writer", "err", err)
	}
}
