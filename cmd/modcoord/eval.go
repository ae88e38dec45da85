package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/mod"
)

func newEvalCmd(e env) *cobra.Command {
	var (
		ckpt, data string
		windows    int
		jsonOut    bool
	)
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Validation loss with top-k and causal routing; the causal decision's precision, recall, F1 and accuracy",
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			ck, err := openCheckpoint(ctx, cmd.ErrOrStderr(), ckpt)
			if err != nil {
				return err
			}
			params, err := ck.LoadParams(ctx)
			if err != nil {
				return fmt.Errorf("load %s: %w", ck.Dir, err)
			}
			ds, err := openTrainData(data)
			if err != nil {
				return err
			}
			defer ds.Close()
			if _, err := checkTrainTokenizer(ds, ck.Config.TokenizerName(), ck.Config.Model); err != nil {
				return fmt.Errorf("--data %s for checkpoint %s: %w", data, ck.Dir, err)
			}
			rep, err := mod.EvaluateRouting(ck.Config.Model, params, ds, windows, 16)
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(out, rep)
			}
			fmt.Fprintf(out, "checkpoint       %s (step %d)\n", ck.Dir, ck.Manifest.Step)
			fmt.Fprintf(out, "val loss top-k   %.4f\n", rep.ValLossTopK)
			fmt.Fprintf(out, "val loss causal  %.4f (%+.2f%%)\n", rep.ValLossCausal, 100*(rep.ValLossCausal/rep.ValLossTopK-1))
			// Accuracy next to its floor (a decision that routes nothing
			// scores 1 − C), and precision, recall and F1, which have none.
			for i, l := range rep.RoutedLayers {
				fmt.Fprintf(out, "layer %d          decision vs top-k: precision %.1f%%, recall %.1f%%, F1 %.1f%%, accuracy %.2f%% (floor %.2f%%); routed %.1f%% under causal routing (capacity %.1f%%)\n",
					l, 100*rep.LayerPrecision[i], 100*rep.LayerRecall[i], 100*rep.LayerF1[i], 100*rep.LayerAccuracy[i], 100*rep.AccuracyFloor, 100*rep.LayerRouted[i], 100*rep.Capacity)
			}
			if len(rep.RoutedLayers) > 0 {
				fmt.Fprintf(out, "fwd FLOPs/seq    %.3g top-k, %.3g at the causally routed share (%.2f× dense %.3g)\n",
					rep.ForwardFLOPs, rep.ForwardFLOPsCausal, rep.ForwardFLOPsCausal/rep.DenseForwardFLOPs, rep.DenseForwardFLOPs)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&ckpt, "checkpoint", "", "checkpoint: a step directory, or a directory written by `train --out`")
	addDataFlag(fs, &data, "corpus: a text file whose last 10% is the validation split, or a directory prepared by `modcoord prepare`")
	fs.IntVar(&windows, "windows", 0, "validation windows to use (0: all)")
	addJSONFlag(cmd, &jsonOut)
	return cmd
}
