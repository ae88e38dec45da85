// Command modcoord trains Mixture-of-Depths transformers, alone or as a
// cluster, and talks to a running cluster.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr, env{getenv: os.Getenv})
	stop()
	os.Exit(code)
}
