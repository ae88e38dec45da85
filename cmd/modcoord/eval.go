package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/modcoord/modcoord/mod"
)

func cmdEval(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	ckpt := fs.String("checkpoint", "", "checkpoint: a step directory, or a directory written by `train --out`")
	data := fs.String("data", "data/tinyshakespeare.txt", "corpus whose last 10% is the validation split")
	windows := fs.Int("windows", 0, "validation windows to use (0: all)")
	jsonOut := fs.Bool("json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ck, err := openCheckpoint(ctx, *ckpt)
	if err != nil {
		return err
	}
	params, err := ck.LoadParams(ctx)
	if err != nil {
		return err
	}
	ds, err := mod.LoadDataset(*data)
	if err != nil {
		return err
	}
	rep, err := mod.EvaluateRouting(ck.Config.Model, params, ds, *windows, 16)
	if err != nil {
		return err
	}
	if *jsonOut {
		return json.NewEncoder(os.Stdout).Encode(rep)
	}
	fmt.Printf("checkpoint       %s (step %d)\n", ck.Dir, ck.Manifest.Step)
	fmt.Printf("val loss top-k   %.4f\n", rep.ValLossTopK)
	fmt.Printf("val loss causal  %.4f (%+.2f%%)\n", rep.ValLossCausal, 100*(rep.ValLossCausal/rep.ValLossTopK-1))
	for i, l := range rep.RoutedLayers {
		fmt.Printf("layer %d          decision accuracy %.2f%%, routed %.1f%% under causal routing (capacity %.1f%%)\n", l, 100*rep.LayerAccuracy[i], 100*rep.LayerRouted[i], 100*rep.Capacity)
	}
	return nil
}
