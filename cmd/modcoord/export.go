package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/export"
)

func newExportCmd() *cobra.Command {
	var (
		ckpt, out string
		jsonOut   bool
	)
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write a checkpoint's weights as named tensors for PyTorch",
		Long: `Write a checkpoint's weights as named tensors for other frameworks: OUT gets
model.safetensors (one float32 tensor per parameter, e.g. layers.3.attn.wqkv)
and config.json (the architecture and tokenizer). tools/modcoord_torch.py
loads the directory into a PyTorch module; see docs/checkpoints.md.
OUT must not exist (or be empty); it appears complete or not at all.`,
		Args: positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageErrorf("--out is required: the directory to write the export to")
			}
			ctx := cmd.Context()
			ck, err := openCheckpoint(ctx, cmd.ErrOrStderr(), ckpt)
			if err != nil {
				return err
			}
			res, err := export.Checkpoint(ctx, ck, out)
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported step %d of %s: %d tensors, %d parameters, %d bytes in %s\n",
				res.Source.Step, res.Source.Checkpoint, res.Tensors, res.Params, res.Bytes, res.Dir)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&ckpt, "checkpoint", "", "checkpoint: a step directory, or a directory written by `train --out`")
	fs.StringVar(&out, "out", "", "directory to create with model.safetensors and config.json")
	addJSONFlag(cmd, &jsonOut)
	return cmd
}
