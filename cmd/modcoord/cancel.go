package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newCancelCmd(e env) *cobra.Command {
	var (
		co      clientOptions
		reason  string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Cancel a job",
		Args:  positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := co.client(cmd.Context(), e)
			if err != nil {
				return err
			}
			j, err := c.Cancel(cmd.Context(), args[0], reason)
			if err != nil {
				return fmt.Errorf("cancel %s: %w", args[0], err)
			}
			if jsonOut {
				return writeJSON(cmd.OutOrStdout(), j)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", j.ID, j.Reason)
			return nil
		},
	}
	addClientFlags(cmd, &co)
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the job's status")
	addJSONFlag(cmd, &jsonOut)
	return cmd
}
