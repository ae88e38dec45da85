package checkpoint

import (
	"errors"
	"fmt"
)

// ErrCorrupt is matched (errors.Is) by every error about a file whose
// content is wrong: malformed, truncated, failing its checksum or not
// matching the manifest. A missing file matches fs.ErrNotExist instead.
var ErrCorrupt = errors.New("checkpoint corrupt")

// ErrNoValidCheckpoint is returned by NewestValid when no committed
// checkpoint verifies.
var ErrNoValidCheckpoint = errors.New("no committed checkpoint verifies")

// ErrWriteInFlight is returned by AsyncWriter.Snapshot when the previous
// checkpoint is still being written and the context ends before it finishes.
var ErrWriteInFlight = errors.New("previous checkpoint still being written")

// ErrClosed is returned by AsyncWriter.Snapshot after Close.
var ErrClosed = errors.New("checkpoint writer closed")

// Fixes suggested in CorruptError; an operator reading a log should know
// what to do next without reading this package.
const (
	fixFallBack = "the file is damaged: fall back to an older committed checkpoint (DirStore.NewestValid) or restore the file from a copy"
	fixNotShard = "the file is not a modcoord checkpoint shard or is damaged: check the path, or fall back to an older committed checkpoint"
	fixUpgrade  = "the file was written by a different modcoord version: read it with the version that wrote it"
)

// CorruptError describes one damaged or unexpected file.
type CorruptError struct {
	Path    string // the file
	Problem string // what is wrong, with the numbers involved
	Fix     string // what the operator can do about it
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("checkpoint file %s: %s; %s", e.Path, e.Problem, e.Fix)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corrupt(path, fix, format string, args ...any) error {
	return &CorruptError{Path: path, Problem: fmt.Sprintf(format, args...), Fix: fix}
}
