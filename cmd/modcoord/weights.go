package main

import (
	"context"
	"fmt"
	"os"

	"github.com/modcoord/modcoord/train"
)

// openCheckpoint opens a checkpoint and tells the user about any newer
// committed checkpoint that failed verification.
func openCheckpoint(ctx context.Context, path string) (*train.Opened, error) {
	if path == "" {
		return nil, fmt.Errorf("--checkpoint is required: a step directory, or a directory written by `modcoord train --out`")
	}
	o, err := train.OpenCheckpoint(ctx, path)
	if err != nil {
		return nil, err
	}
	for _, s := range o.Skipped {
		fmt.Fprintf(os.Stderr, "warning: %s; using step %d instead\n", s, o.Manifest.Step)
	}
	return o, nil
}
