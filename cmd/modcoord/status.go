package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/coordinator"
)

func newStatusCmd(e env) *cobra.Command {
	var (
		co      clientOptions
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "status [JOB]",
		Short: "Show all jobs, or one job in detail",
		Args:  positional(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			c, err := co.client(ctx, e)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				j, err := c.Job(ctx, args[0])
				if err != nil {
					return fmt.Errorf("job %s: %w", args[0], err)
				}
				if jsonOut {
					return writeJSON(out, j)
				}
				printJob(out, j)
				return nil
			}
			jobs, err := c.Jobs(ctx)
			if err != nil {
				return fmt.Errorf("list jobs: %w", err)
			}
			if jsonOut {
				if jobs == nil {
					jobs = []coordinator.Job{} // [] rather than null
				}
				return writeJSON(out, jobs)
			}
			if len(jobs) == 0 {
				fmt.Fprintln(out, "no jobs")
				return nil
			}
			printJobTable(out, jobs)
			return nil
		},
	}
	addClientFlags(cmd, &co)
	addJSONFlag(cmd, &jsonOut)
	return cmd
}

func printJobTable(w io.Writer, jobs []coordinator.Job) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tNAME\tSTATUS\tSTEP\tTRAIN LOSS\tVAL LOSS\tBUDGET\tGEN\tWORKERS\tREASON")
	for _, j := range jobs {
		loss, val := "-", "-"
		if l, ok := j.LastLoss(); ok {
			loss = fmt.Sprintf("%.4f", l)
		}
		if v, ok := j.LastVal(); ok {
			val = fmt.Sprintf("%.4f@%d", v.Loss, v.Step)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%d\t%d\t%s\n", j.ID, j.Spec.Name, j.Status,
			j.Ledger.StepsDone, j.Ledger.TotalSteps, loss, val, budgetUsed(j.Ledger), j.Generation, len(j.Members), j.Reason)
	}
	tw.Flush()
}

func budgetUsed(l coordinator.Ledger) string {
	if l.BudgetFLOPs <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*l.FLOPsUsed/l.BudgetFLOPs)
}

func printJob(w io.Writer, j coordinator.Job) {
	l := j.Ledger
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("job", "%s (%s)", j.ID, j.Spec.Name)
	row("status", "%s", j.Reason) // reasons start with the status
	row("model", "%s", j.Spec.Model)
	row("data", "%s (tokenizer %s), batch %d, workers %d..%d", specData(j.Spec), j.Spec.Tokenizer, j.Spec.Batch, j.Spec.MinWorkers, j.Spec.MaxWorkers)
	row("steps", "%d of %d (generation %d started at step %d)", l.StepsDone, l.TotalSteps, j.Generation, j.StartStep)
	row("budget", "%.4g of %.4g FLOPs used (%s), %.4g spent incl. redone steps, %.4g FLOPs/step",
		l.FLOPsUsed, l.BudgetFLOPs, budgetUsed(l), l.FLOPsSpent, l.FLOPsPerStep)
	row("members", "%s", strings.Join(j.Members, " "))
	for _, s := range j.Stragglers {
		row("straggler", "%s computes %.3f s/step, %.1f× its peers' median %.3f s (reported, not evicted)", s.Worker, s.ComputeS, s.Ratio, s.PeersS)
	}
	if loss, ok := j.LastLoss(); ok {
		row("train loss", "%.4f (step %d, rank 0's last batch)", loss, j.Recent[len(j.Recent)-1].Step)
	}
	if v, ok := j.LastVal(); ok {
		row("val loss", "%.4f (step %d, %d validation windows)", v.Loss, v.Step, j.Spec.EvalWindows)
	}
	if j.Checkpoint != nil {
		row("checkpoint", "step %d (generation %d, %d shards)", j.Checkpoint.Step, j.Checkpoint.Generation, len(j.Checkpoint.Shards))
	}
	row("submitted", "%s", j.SubmittedAt.Format(time.RFC3339))
	if !j.EndedAt.IsZero() {
		row("ended", "%s", j.EndedAt.Format(time.RFC3339))
	}
	tw.Flush()
}

// specData names a spec's data: its path, or its shard lists' sizes.
func specData(s coordinator.JobSpec) string {
	if s.Shards != nil {
		return fmt.Sprintf("%d training and %d validation shards", len(s.Shards.Train), len(s.Shards.Val))
	}
	return s.Data
}
