// Package train is one rank's training step: forward and backward through
// the model (mod), the gradient's reduce-scatter over a Collective, AdamW on
// the rank's own range of the parameters (shard), the parameters'
// all-gather, and the rank's checkpoint save and restore (checkpoint).
// With sync.mode diloco (diloco.go) a rank instead takes inner AdamW steps
// alone and joins the others only for DiLoCo's outer step.
//
// It knows nothing of the cluster: the worker package decides when a rank
// trains, with whom, and when to checkpoint; `modcoord train` and the
// isoFLOP sweep drive a single-rank Trainer directly.
package train
