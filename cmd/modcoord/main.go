// Command modcoord trains Mixture-of-Depths transformers, alone or as a
// cluster, and talks to a running cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand. run gets the arguments after its name.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

func commands() map[string]command {
	return map[string]command{
		"train":   {"train a model in this process", cmdTrain},
		"bench":   {"measure speed: bench compute|allreduce|sample", cmdBench},
		"eval":    {"validation loss with top-k and causal routing, and decision accuracy", cmdEval},
		"sample":  {"generate text from a checkpoint with causal routing and a KV cache", cmdSample},
		"local":   {"run a whole cluster in this process and train the default job", cmdLocal},
		"worker":  {"run a training worker", cmdWorker},
		"isoflop": {"train dense and MoD models to equal FLOP budgets and compare", cmdIsoflop},

		"coordinator": {"run a raft coordinator node (API, scheduler)", cmdCoordinator},
		"submit":      {"submit a job spec (YAML or JSON); prints the job id and its step count", cmdSubmit},
		"status":      {"show jobs", cmdStatus},
		"watch":       {"follow a job's progress live", cmdWatch},
		"cancel":      {"cancel a job", cmdCancel},
		"checkpoints": {"list a job's committed checkpoints", cmdCheckpoints},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(cmds)
		return 2
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "modcoord: unknown command %q\n\n", args[0])
		usage(cmds)
		return 2
	}
	if err := c.run(ctx, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintf(os.Stderr, "modcoord %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(cmds map[string]command) {
	fmt.Fprintln(os.Stderr, "usage: modcoord <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", n, cmds[n].summary)
	}
}
