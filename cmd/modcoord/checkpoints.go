package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/modcoord/modcoord/checkpoint"
	"github.com/spf13/cobra"
)

func newCheckpointsCmd(e env) *cobra.Command {
	var (
		co      clientOptions
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "checkpoints JOB",
		Short: "List a job's committed checkpoints",
		Args:  positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			c, err := co.client(cmd.Context(), e)
			if err != nil {
				return err
			}
			v, err := c.Checkpoints(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("checkpoints of %s: %w", args[0], err)
			}
			if jsonOut {
				return writeJSON(out, v)
			}
			if len(v.Retained) == 0 && v.Pending == nil {
				fmt.Fprintf(out, "job %s has no checkpoints yet\n", v.Job)
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STEP\tGEN\tSTATE\tSHARDS\tPARAMS\tBYTES")
			show := func(m checkpoint.Manifest, state string) {
				var bytes int64
				for _, s := range m.Shards {
					bytes += s.Bytes
				}
				fmt.Fprintf(tw, "%d\t%d\t%s\t%d/%d\t%d\t%d\n", m.Step, m.Generation, state, len(m.Shards), m.World, m.Total, bytes)
			}
			for i, m := range v.Retained {
				state := "committed"
				if i == len(v.Retained)-1 {
					state = "committed (latest)"
				}
				show(m, state)
			}
			if v.Pending != nil {
				show(*v.Pending, "pending")
			}
			return tw.Flush()
		},
	}
	addClientFlags(cmd, &co)
	addJSONFlag(cmd, &jsonOut)
	return cmd
}
