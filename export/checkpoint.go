package export

import (
	"context"
	"fmt"

	"github.com/modcoord/modcoord/train"
)

// Checkpoint exports an opened (and so verified) checkpoint to out.
func Checkpoint(ctx context.Context, ck *train.Opened, out string) (Result, error) {
	tok, err := TokenizerOf(ck.Manifest.Config)
	if err != nil {
		return Result{}, fmt.Errorf("export %s: %w", ck.Dir, err)
	}
	params, err := ck.LoadParams(ctx)
	if err != nil {
		return Result{}, err
	}
	src := Source{Checkpoint: ck.Dir, Job: ck.Manifest.Job, Step: ck.Manifest.Step, Generation: ck.Manifest.Generation}
	return Write(ctx, out, NewConfig(ck.Config.Model, tok, src), params)
}
