package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/bench"
)

// newBenchAllreduceCmd runs the NATS ring and the direct-TCP reference
// ring on loopback in one process and prints their bus bandwidths.
func newBenchAllreduceCmd() *cobra.Command {
	var (
		o       bench.AllReduceOptions
		gather  string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "allreduce",
		Short: "Bus bandwidth of the NATS ring against a direct-TCP ring, on loopback",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			switch gather {
			case "fanout":
				o.Gather = allreduce.GatherFanout
			case "ring":
				o.Gather = allreduce.GatherRing
			default:
				return usageErrorf("--gather %q: want fanout or ring", gather)
			}
			res, err := bench.AllReduce(cmd.Context(), o)
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(out, res)
			}
			fmt.Fprintf(out, "all-reduce of %d float32s (%.1f MiB) on %d workers, median of %d\n",
				res.Floats, float64(4*res.Floats)/(1<<20), res.Workers, res.Reps)
			fmt.Fprintf(out, "  NATS ring: %8.1f MB/s bus bandwidth  (%.3f s; %s all-gather, chunk %d B, depth %d, max_payload %d B, %.0f MiB allocated per all-reduce)\n",
				res.NATSBusBW, res.NATSSeconds, res.Gather, res.ChunkBytes, res.PipelineDepth, res.MaxPayload, float64(res.NATSAllocBytes)/(1<<20))
			fmt.Fprintf(out, "  TCP ring:  %8.1f MB/s bus bandwidth  (%.3f s)\n", res.TCPBusBW, res.TCPSeconds)
			fmt.Fprintf(out, "  ratio NATS/TCP: %.2f; results bit-identical: %v\n", res.Ratio, res.Identical)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&o.Workers, "workers", 4, "number of ranks")
	fs.IntVar(&o.Floats, "floats", 16777216, "float32 elements per rank's vector")
	fs.IntVar(&o.Reps, "reps", 5, "timed repetitions; the median is reported")
	fs.IntVar(&o.ChunkBytes, "chunk-bytes", 0, "NATS message payload cap in bytes (0: default, limited by max_payload)")
	fs.IntVar(&o.Window, "depth", 0, "pipeline depth in chunks (0: default)")
	fs.IntVar(&o.MaxPayload, "max-payload", 0, "embedded server's max_payload in bytes (0: NATS default, 1 MiB)")
	fs.StringVar(&gather, "gather", "fanout", "NATS all-gather: fanout (one publish per chunk to every rank) or ring")
	addJSONFlag(cmd, &jsonOut)
	return cmd
}
