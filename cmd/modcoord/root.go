package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// env is what the commands read from the process environment, passed in
// so that tests run commands in-process without touching the real one.
type env struct {
	getenv func(string) string
}

const rootLong = `modcoord trains Mixture-of-Depths transformers, alone (train, eval, sample,
bench, isoflop, local) or as a cluster (coordinator, worker), and talks to a
running cluster (submit, status, watch, cancel, checkpoints).

Commands that talk to a cluster take --coordinator URL[,URL...] and a
client certificate (the API is HTTPS with mutual TLS): --tls-dir DIR
holding ca.crt and a user-NAME.crt/.key from modcoord certs, or --ca,
--cert and --key. Every shared flag also reads an environment variable:
  MODCOORD_COORDINATOR      --coordinator (MODCOORD_ADDR is accepted too)
  MODCOORD_TLS_DIR          --tls-dir
  MODCOORD_CA               --ca
  MODCOORD_CERT             --cert
  MODCOORD_KEY              --key
  MODCOORD_CONNECT_TIMEOUT  --connect-timeout
  MODCOORD_ETCD             --etcd (coordinator, worker)
  MODCOORD_CLUSTER          --cluster (coordinator, worker)
  MODCOORD_DATA             --data (train, eval, local, isoflop)
A flag on the command line wins over its variable.

Commands that print a result take --json for one JSON object (watch: one
object per line, per change).

`

// newRootCmd builds the whole command tree. Nothing is package-level state:
// every call returns a fresh tree, so tests can run commands in parallel.
func newRootCmd(e env) *cobra.Command {
	root := &cobra.Command{
		Use:   "modcoord",
		Short: "Train Mixture-of-Depths transformers, alone or across a cluster",
		Long:  rootLong + exitCodeHelp(),
		// Errors are printed once, by execute, with the command's name.
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noSubcommandArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd, e.getenv)
		},
	}
	root.SetGlobalNormalizationFunc(normalizeFlagName)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddGroup(
		&cobra.Group{ID: "local", Title: "Training on this machine:"},
		&cobra.Group{ID: "cluster", Title: "Running a cluster:"},
		&cobra.Group{ID: "client", Title: "Talking to a cluster:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			root.AddCommand(c)
		}
	}
	add("local", newTrainCmd(e), newEvalCmd(e), newSampleCmd(), newBenchCmd(), newIsoflopCmd(e), newLocalCmd(e), newExportCmd(), newPrepareCmd())
	add("cluster", newCoordinatorCmd(e), newWorkerCmd(e), newCertsCmd(), newEtcdSetupCmd(e))
	add("client", newSubmitCmd(e), newStatusCmd(e), newWatchCmd(e), newCancelCmd(e), newCheckpointsCmd(e))
	root.AddCommand(newVersionCmd())
	return root
}

// noSubcommandArgs refuses arguments to a command that only groups others:
// without it, cobra shows the group's help for a misspelt subcommand and
// exits 0.
func noSubcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageErrorf("%s", msg)
}

// positional wraps a cobra argument check so that its failure is a usage
// error (exit 2).
func positional(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// execute runs the command line args and returns the exit code. Errors go
// to stderr as "modcoord CMD: error".
func execute(ctx context.Context, args []string, stdout, stderr io.Writer, e env) int {
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	name := "modcoord"
	if cmd != nil {
		name = cmd.CommandPath()
	}
	fmt.Fprintf(stderr, "%s: %v\n", name, err)
	code := exitCode(ctx, err)
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}
