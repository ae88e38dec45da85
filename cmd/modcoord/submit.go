package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/coordinator"
)

func newSubmitCmd(e env) *cobra.Command {
	var (
		co       clientOptions
		dataRoot string
		jsonOut  bool
	)
	cmd := &cobra.Command{
		Use:   "submit JOB.yaml",
		Short: "Submit a job spec (YAML or JSON); prints the job id and its step count",
		Args:  positional(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read job spec: %w", err)
			}
			// Validate here first: the same checks the coordinator runs,
			// without a round trip, and with the data file checked on this
			// machine.
			spec, err := coordinator.ParseSpec(body)
			if err == nil && dataRoot != "" {
				err = spec.CheckData(dataRoot)
			}
			if err != nil {
				return fmt.Errorf("%s is not a valid job spec:\n  %s", args[0], strings.Join(coordinator.FieldErrors(err), "\n  "))
			}
			c, err := co.client(cmd.Context(), e)
			if err != nil {
				return err
			}
			res, err := c.Submit(cmd.Context(), body)
			if err != nil {
				return fmt.Errorf("submit %s: %w", args[0], err)
			}
			if jsonOut {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%d steps × %.4g FLOPs/step (budget %.4g FLOPs)\n", res.ID, res.Steps, res.FLOPsPerStep, res.BudgetFLOPs)
			return nil
		},
	}
	addClientFlags(cmd, &co)
	cmd.Flags().StringVar(&dataRoot, "data-root", "", "also check that the data file opens under this directory here (the workers' data root, if you have a copy)")
	addJSONFlag(cmd, &jsonOut)
	return cmd
}
