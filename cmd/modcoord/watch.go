package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/coordinator"
)

func newWatchCmd(e env) *cobra.Command {
	var (
		co      clientOptions
		jsonOut bool
		every   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch [JOB]",
		Short: "Follow a job's progress live (default: the job holding the workers)",
		Long: `Follow a job's progress until it ends: step/total, loss, tokens/s, budget
used, ETA, generation and workers, on stderr. With --json, one JSON object
(the job's status, as status --json prints it) per line on stdout each time
it changes. Exits 0 when the job completes and 3 when it fails or is
canceled.`,
		Args: positional(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if every <= 0 {
				return usageErrorf("--interval %s: need a positive duration", every)
			}
			c, err := co.client(ctx, e)
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			} else if id, err = currentJob(ctx, c); err != nil {
				return err
			}
			var obs jobObserver = newProgressBar(cmd.ErrOrStderr())
			if jsonOut {
				obs = &jsonLines{w: cmd.OutOrStdout()}
			}
			j, err := watchJob(ctx, c, id, every, obs)
			if err != nil {
				return err
			}
			if j.Status != coordinator.StatusCompleted {
				return &jobEndedError{id: j.ID, reason: j.Reason}
			}
			if !jsonOut {
				fmt.Fprintf(cmd.ErrOrStderr(), "job %s %s\n", j.ID, j.Reason)
			}
			return nil
		},
	}
	addClientFlags(cmd, &co)
	cmd.Flags().DurationVar(&every, "interval", 500*time.Millisecond, "how often to poll the job's status")
	addJSONFlag(cmd, &jsonOut)
	return cmd
}

// currentJob is the job holding the workers, else the next queued one,
// else the last submitted.
func currentJob(ctx context.Context, c *coordinator.Client) (string, error) {
	jobs, err := c.Jobs(ctx)
	if err != nil {
		return "", fmt.Errorf("list jobs: %w", err)
	}
	if len(jobs) == 0 {
		return "", errors.New("no jobs to watch")
	}
	for _, j := range jobs {
		if !j.Status.Terminal() {
			return j.ID, nil
		}
	}
	return jobs[len(jobs)-1].ID, nil
}

// jobObserver is shown each state of a watched job.
type jobObserver interface {
	observe(coordinator.Job) error
	done()
}

// watchJob polls a job until it ends, showing each state to obs.
func watchJob(ctx context.Context, c *coordinator.Client, id string, every time.Duration, obs jobObserver) (coordinator.Job, error) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	defer obs.done()
	for {
		job, err := c.Job(ctx, id)
		if err != nil {
			return job, fmt.Errorf("job %s: %w", id, err)
		}
		if err := obs.observe(job); err != nil {
			return job, err
		}
		if job.Status.Terminal() {
			return job, nil
		}
		select {
		case <-ctx.Done():
			return job, ctx.Err()
		case <-tick.C:
		}
	}
}

// jsonLines writes a job's status as a line of JSON each time it changes.
type jsonLines struct {
	w    io.Writer
	last []byte
}

func (j *jsonLines) observe(job coordinator.Job) error {
	b, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", job.ID, err)
	}
	if bytes.Equal(b, j.last) {
		return nil
	}
	j.last = b
	if _, err := j.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

func (j *jsonLines) done() {}
