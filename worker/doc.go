// Package worker runs one rank of a data-parallel training job: it
// registers with the cluster, receives its rank and generation, and runs
// training steps (forward and backward with mod/, reduce-scatter, AdamW on
// its own shard, all-gather) until the job's step budget is spent.
package worker
