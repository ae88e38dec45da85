package main

import (
	"context"
	"fmt"
)

func cmdBench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: modcoord bench compute|allreduce [flags]")
	}
	switch args[0] {
	case "compute":
		return benchCompute(ctx, args[1:])
	}
	return fmt.Errorf("unknown benchmark %q; use compute or allreduce", args[0])
}
