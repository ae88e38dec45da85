package main

import (
	"context"
	"fmt"
)

func cmdBench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: modcoord bench compute|allreduce|sample [flags]")
	}
	switch args[0] {
	case "compute":
		return benchCompute(ctx, args[1:])
	case "sample":
		return benchSample(ctx, args[1:])
	case "allreduce":
		return benchAllreduce(ctx, args[1:])
	}
	return fmt.Errorf("unknown benchmark %q; use compute, allreduce or sample", args[0])
}
