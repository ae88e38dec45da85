package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Exit codes. They are part of the interface (scripts and CI branch on
// them), so they live here, in one table, and the root command's help and
// docs/cli.md print the same table.
const (
	exitOK          = 0   // the command did what it was asked
	exitFailure     = 1   // a runtime failure: I/O, the API answered an error, training failed
	exitUsage       = 2   // a usage error: unknown command or flag, bad argument or flag value
	exitJobEnded    = 3   // the job being followed (watch, local) ended failed or canceled
	exitUnreachable = 4   // no coordinator answered a connection within --connect-timeout
	exitInterrupted = 130 // SIGINT or SIGTERM stopped the command (128 + SIGINT, as shells report)
)

// exitCodeTable is the documented table, in order.
var exitCodeTable = []struct {
	code int
	why  string
}{
	{exitOK, "success"},
	{exitFailure, "runtime failure (I/O, an error answer from the API, training failed)"},
	{exitUsage, "usage error (unknown command or flag, bad argument or flag value)"},
	{exitJobEnded, "the followed job ended failed or canceled (watch, local)"},
	{exitUnreachable, "no coordinator accepted a connection within --connect-timeout"},
	{exitInterrupted, "interrupted by SIGINT or SIGTERM"},
}

func exitCodeHelp() string {
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for _, e := range exitCodeTable {
		fmt.Fprintf(&b, "  %3d  %s\n", e.code, e.why)
	}
	return b.String()
}

// usageError marks a mistake in the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error {
	return &usageError{fmt.Errorf(format, a...)}
}

// jobEndedError says that a followed job ended without completing.
type jobEndedError struct {
	id, reason string
}

func (e *jobEndedError) Error() string { return fmt.Sprintf("job %s %s", e.id, e.reason) }

// unreachableError says that no coordinator accepted a connection.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// exitCode maps the error a command returned to the process exit code.
// ctx is the command's context: once a signal cancelled it, whatever error
// the command returned is a consequence of the interruption.
func exitCode(ctx context.Context, err error) int {
	var (
		usage   *usageError
		ended   *jobEndedError
		unreach *unreachableError
	)
	switch {
	case err == nil:
		return exitOK
	case ctx.Err() != nil:
		return exitInterrupted
	case errors.As(err, &usage):
		return exitUsage
	case errors.As(err, &ended):
		return exitJobEnded
	case errors.As(err, &unreach):
		return exitUnreachable
	}
	return exitFailure
}
