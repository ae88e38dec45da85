package main

import "github.com/spf13/cobra"

// newBenchCmd groups the benchmarks.
func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure speed: bench compute|allreduce|sample",
		Args:  noSubcommandArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newBenchComputeCmd(), newBenchAllreduceCmd(), newBenchSampleCmd(), newBenchDiLoCoNATSCmd(), newBenchDiLoCoRankCmd(), newBenchDiLoCoLocalCmd(), newBenchDiLoCoDelayCmd())
	return cmd
}
