package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/modcoord/modcoord/allreduce"
	"github.com/modcoord/modcoord/bench"
)

// benchAllreduce implements `modcoord bench allreduce`: it runs the NATS
// ring and the direct-TCP reference ring on loopback in one process and
// prints their bus bandwidths.
func benchAllreduce(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench allreduce", flag.ContinueOnError)
	var o bench.AllReduceOptions
	fs.IntVar(&o.Workers, "workers", 4, "number of ranks")
	fs.IntVar(&o.Floats, "floats", 16777216, "float32 elements per rank's vector")
	fs.IntVar(&o.Reps, "reps", 5, "timed repetitions; the median is reported")
	fs.IntVar(&o.ChunkBytes, "chunk-bytes", 0, "NATS message payload cap in bytes (0: default, limited by max_payload)")
	fs.IntVar(&o.Window, "depth", 0, "pipeline depth in chunks (0: default)")
	fs.IntVar(&o.MaxPayload, "max-payload", 0, "embedded server's max_payload in bytes (0: NATS default, 1 MiB)")
	gather := fs.String("gather", "fanout", "NATS all-gather: fanout (one publish per chunk to every rank) or ring")
	asJSON := fs.Bool("json", false, "print one JSON object instead of text")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: modcoord bench allreduce [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench allreduce: unexpected arguments %q", fs.Args())
	}
	switch *gather {
	case "fanout":
		o.Gather = allreduce.GatherFanout
	case "ring":
		o.Gather = allreduce.GatherRing
	default:
		return fmt.Errorf("bench allreduce: --gather %q: want fanout or ring", *gather)
	}
	res, err := bench.AllReduce(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("all-reduce of %d float32s (%.1f MiB) on %d workers, median of %d\n",
		res.Floats, float64(4*res.Floats)/(1<<20), res.Workers, res.Reps)
	fmt.Printf("  NATS ring: %8.1f MB/s bus bandwidth  (%.3f s; %s all-gather, chunk %d B, depth %d, max_payload %d B, %.0f MiB allocated per all-reduce)\n",
		res.NATSBusBW, res.NATSSeconds, res.Gather, res.ChunkBytes, res.PipelineDepth, res.MaxPayload, float64(res.NATSAllocBytes)/(1<<20))
	fmt.Printf("  TCP ring:  %8.1f MB/s bus bandwidth  (%.3f s)\n", res.TCPBusBW, res.TCPSeconds)
	fmt.Printf("  ratio NATS/TCP: %.2f; results bit-identical: %v\n", res.Ratio, res.Identical)
	return nil
}
