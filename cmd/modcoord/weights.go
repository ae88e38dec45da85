package main

import (
	"context"
	"fmt"
	"io"

	"github.com/modcoord/modcoord/train"
)

// openCheckpoint opens a checkpoint and tells the user on stderr about any
// newer committed checkpoint that failed verification.
func openCheckpoint(ctx context.Context, stderr io.Writer, path string) (*train.Opened, error) {
	if path == "" {
		return nil, usageErrorf("--checkpoint is required: a step directory, or a directory written by `modcoord train --out`")
	}
	o, err := train.OpenCheckpoint(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint %s: %w", path, err)
	}
	for _, s := range o.Skipped {
		fmt.Fprintf(stderr, "warning: %s; using step %d instead\n", s, o.Manifest.Step)
	}
	return o, nil
}
